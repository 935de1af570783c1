//! The DNS wire format (RFC 1035), as much of it as a stub resolver's
//! questions and the node's answers need: one question in, A/AAAA/SRV
//! answers out, EDNS(0) payload sizes (RFC 6891), truncation.
//!
//! Every query comes from a container and is hostile: parsing reads only
//! within the packet, refuses compression in the question, and never
//! allocates more than the packet's size.

use std::net::IpAddr;

pub const TYPE_A: u16 = 1;
pub const TYPE_AAAA: u16 = 28;
pub const TYPE_SRV: u16 = 33;
pub const TYPE_OPT: u16 = 41;
pub const TYPE_ANY: u16 = 255;
pub const CLASS_IN: u16 = 1;

pub const RCODE_FORMERR: u8 = 1;
pub const RCODE_SERVFAIL: u8 = 2;
pub const RCODE_NXDOMAIN: u8 = 3;
pub const RCODE_NOTIMP: u8 = 4;
pub const RCODE_REFUSED: u8 = 5;

const HEADER: usize = 12;
/// A UDP answer's size without EDNS.
pub const CLASSIC_UDP: usize = 512;
/// The largest UDP answer given whatever a client offers (the DNS flag
/// day's size: no IP fragmentation on common paths).
pub const MAX_UDP: usize = 1232;
/// Pointer to the question's name, which always starts right after the header.
const QNAME_POINTER: [u8; 2] = [0xC0, HEADER as u8];

/// Why a packet is not a query this server can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    /// Too short for a header: nothing can be answered (not even the id).
    NoHeader,
    /// A header, but not one readable question: answer FORMERR.
    Question,
    /// A response, not a query: drop it.
    NotQuery,
}

/// One question, read from a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub id: u16,
    /// Header flags as sent; the opcode and RD are echoed.
    pub flags: u16,
    /// The name's labels, ASCII lowercased; `None` for a label holding a
    /// dot or a byte outside printable ASCII (never one of the cluster's).
    pub name: Option<String>,
    pub qtype: u16,
    pub qclass: u16,
    /// The question section as sent, echoed in the answer.
    pub question: Vec<u8>,
    /// The EDNS(0) payload size the client offered, if it sent an OPT record.
    pub edns: Option<u16>,
}

impl Query {
    pub fn opcode(&self) -> u8 {
        ((self.flags >> 11) & 0xF) as u8
    }

    /// The largest UDP answer this client takes.
    pub fn udp_limit(&self) -> usize {
        match self.edns {
            Some(size) => (size as usize).clamp(CLASSIC_UDP, MAX_UDP),
            None => CLASSIC_UDP,
        }
    }
}

/// The id of a packet, if it has a header (for a FORMERR answer).
pub fn id_of(packet: &[u8]) -> Option<u16> {
    (packet.len() >= HEADER).then(|| u16::from_be_bytes([packet[0], packet[1]]))
}

/// Reads the one question of a query.
pub fn parse(packet: &[u8]) -> Result<Query, Malformed> {
    if packet.len() < HEADER {
        return Err(Malformed::NoHeader);
    }
    let id = u16::from_be_bytes([packet[0], packet[1]]);
    let flags = u16::from_be_bytes([packet[2], packet[3]]);
    if flags & 0x8000 != 0 {
        return Err(Malformed::NotQuery);
    }
    let count = |at: usize| u16::from_be_bytes([packet[at], packet[at + 1]]);
    let (qd, an, ns, ar) = (count(4), count(6), count(8), count(10));
    if qd != 1 || an != 0 || ns != 0 {
        return Err(Malformed::Question);
    }
    let mut at = HEADER;
    let mut name = String::new();
    let mut printable = true;
    loop {
        let len = *packet.get(at).ok_or(Malformed::Question)? as usize;
        at += 1;
        if len == 0 {
            break;
        }
        // Pointers (0xC0) and the reserved label types: never in a question.
        if len > 63 {
            return Err(Malformed::Question);
        }
        let label = packet.get(at..at + len).ok_or(Malformed::Question)?;
        at += len;
        // With the root's zero byte still to come: at most 255 in all.
        if at - HEADER >= 255 {
            return Err(Malformed::Question);
        }
        if !name.is_empty() {
            name.push('.');
        }
        for &b in label {
            if b == b'.' || !(0x21..0x7F).contains(&b) {
                printable = false;
            }
            name.push(b.to_ascii_lowercase() as char);
        }
    }
    let fixed = packet.get(at..at + 4).ok_or(Malformed::Question)?;
    let qtype = u16::from_be_bytes([fixed[0], fixed[1]]);
    let qclass = u16::from_be_bytes([fixed[2], fixed[3]]);
    at += 4;
    let question = packet[HEADER..at].to_vec();
    // An OPT record in the additional section says how large an answer the
    // client takes; anything else there is ignored.
    let mut edns = None;
    if ar >= 1 {
        // The root name (one zero byte), then type, class (the size), TTL, rdlength.
        if let Some(opt) = packet.get(at..at + 11) {
            if opt[0] == 0 && u16::from_be_bytes([opt[1], opt[2]]) == TYPE_OPT {
                edns = Some(u16::from_be_bytes([opt[3], opt[4]]));
            }
        }
    }
    Ok(Query {
        id,
        flags,
        name: printable.then_some(name),
        qtype,
        qclass,
        question,
        edns,
    })
}

/// A record of an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// An address for the question's name.
    Address(IpAddr),
    /// An address for another name (SRV targets, in the additional section).
    AddressOf(String, IpAddr),
    /// A service location for the question's name.
    Srv { port: u16, target: String },
}

/// An answer to `q`.
pub struct Answer<'a> {
    pub query: &'a Query,
    pub rcode: u8,
    /// Authoritative (the cluster's own names).
    pub authoritative: bool,
    pub answers: &'a [Record],
    pub additional: &'a [Record],
    pub ttl: u32,
}

impl Answer<'_> {
    /// The answer's bytes, at most `limit` long: records that do not fit
    /// are left out and the answer marked truncated (TC), so the client
    /// asks again over TCP.
    pub fn encode(&self, limit: usize) -> Vec<u8> {
        let q = self.query;
        let mut out = Vec::with_capacity(limit.min(4096));
        out.extend_from_slice(&q.id.to_be_bytes());
        // QR, the query's opcode and RD, AA, RA, the rcode.
        let mut flags = 0x8000 | (q.flags & 0x7900) | 0x0080 | self.rcode as u16;
        if self.authoritative {
            flags |= 0x0400;
        }
        out.extend_from_slice(&flags.to_be_bytes());
        out.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
        out.extend_from_slice(&q.question);
        // Room kept for the OPT record when the client sent one.
        let opt_len = if q.edns.is_some() { 11 } else { 0 };
        let budget = limit.saturating_sub(opt_len);
        let mut truncated = false;
        let mut written = [0u16; 2];
        for (section, records) in [self.answers, self.additional].iter().enumerate() {
            for r in records.iter() {
                let mark = out.len();
                self.record(&mut out, r);
                if out.len() > budget {
                    out.truncate(mark);
                    // A missing additional record is not a truncation
                    // (RFC 2181 9): the client can still ask for it.
                    truncated |= section == 0;
                    break;
                }
                written[section] += 1;
            }
        }
        out[6..8].copy_from_slice(&written[0].to_be_bytes());
        let mut ar = written[1];
        if q.edns.is_some() {
            out.push(0);
            out.extend_from_slice(&TYPE_OPT.to_be_bytes());
            out.extend_from_slice(&(MAX_UDP as u16).to_be_bytes());
            out.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
            ar += 1;
        }
        out[10..12].copy_from_slice(&ar.to_be_bytes());
        if truncated {
            out[2] |= 0x02;
        }
        out
    }

    fn record(&self, out: &mut Vec<u8>, r: &Record) {
        let (owner, typ, rdata): (Option<&str>, u16, Vec<u8>) = match r {
            Record::Address(ip) => (None, address_type(ip), address_bytes(ip)),
            Record::AddressOf(name, ip) => (Some(name), address_type(ip), address_bytes(ip)),
            Record::Srv { port, target } => {
                let mut d = vec![0, 0, 0, 0];
                d.extend_from_slice(&port.to_be_bytes());
                encode_name(&mut d, target);
                (None, TYPE_SRV, d)
            }
        };
        match owner {
            None => out.extend_from_slice(&QNAME_POINTER),
            Some(name) => encode_name(out, name),
        }
        out.extend_from_slice(&typ.to_be_bytes());
        out.extend_from_slice(&CLASS_IN.to_be_bytes());
        out.extend_from_slice(&self.ttl.to_be_bytes());
        out.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        out.extend_from_slice(&rdata);
    }
}

fn address_type(ip: &IpAddr) -> u16 {
    match ip {
        IpAddr::V4(_) => TYPE_A,
        IpAddr::V6(_) => TYPE_AAAA,
    }
}

fn address_bytes(ip: &IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v) => v.octets().to_vec(),
        IpAddr::V6(v) => v.octets().to_vec(),
    }
}

/// `name` (dot-separated labels of the cluster's own names) in wire form.
fn encode_name(out: &mut Vec<u8>, name: &str) {
    for label in name.split('.').filter(|l| !l.is_empty()) {
        let l = &label.as_bytes()[..label.len().min(63)];
        out.push(l.len() as u8);
        out.extend_from_slice(l);
    }
    out.push(0);
}

/// A bare error answer to a packet that has a header but no readable
/// question (FORMERR), echoing only its id.
pub fn format_error(id: u16) -> Vec<u8> {
    let mut out = id.to_be_bytes().to_vec();
    out.extend_from_slice(&(0x8000u16 | 0x0080 | RCODE_FORMERR as u16).to_be_bytes());
    out.extend_from_slice(&[0; 8]);
    out
}

/// A query for `name`'s `qtype` records, recursion desired, offering an
/// EDNS payload size if `edns` (what a stub resolver sends).
pub fn query(id: u16, name: &str, qtype: u16, edns: Option<u16>) -> Vec<u8> {
    let mut p = id.to_be_bytes().to_vec();
    p.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, edns.is_some() as u8]);
    encode_name(&mut p, name);
    p.extend_from_slice(&qtype.to_be_bytes());
    p.extend_from_slice(&CLASS_IN.to_be_bytes());
    if let Some(size) = edns {
        p.push(0);
        p.extend_from_slice(&TYPE_OPT.to_be_bytes());
        p.extend_from_slice(&size.to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    }
    p
}

/// An answer's id, rcode and the addresses of its answer section (A and
/// AAAA records), as a client reads them; `None` for a packet too short
/// for what it says it holds.
pub fn read_addresses(p: &[u8]) -> Option<(u16, u8, Vec<IpAddr>)> {
    let n = |at: usize| Some(u16::from_be_bytes([*p.get(at)?, *p.get(at + 1)?]));
    let skip_name = |mut at: usize| loop {
        let l = *p.get(at)? as usize;
        if l == 0 {
            return Some(at + 1);
        }
        if l >= 0xC0 {
            return Some(at + 2);
        }
        at += 1 + l;
    };
    let (id, count) = (n(0)?, n(6)?);
    let rcode = p.get(3)? & 0xF;
    let mut at = (0..n(4)?).try_fold(HEADER, |at, _| Some(skip_name(at)? + 4))?;
    let mut out = Vec::new();
    for _ in 0..count {
        at = skip_name(at)?;
        let (typ, len) = (n(at)?, n(at + 8)? as usize);
        let rdata = p.get(at + 10..at + 10 + len)?;
        match (typ, <[u8; 4]>::try_from(rdata), <[u8; 16]>::try_from(rdata)) {
            (TYPE_A, Ok(v4), _) => out.push(IpAddr::from(v4)),
            (TYPE_AAAA, _, Ok(v6)) => out.push(IpAddr::from(v6)),
            _ => {}
        }
        at += 10 + len;
    }
    Some((id, rcode, out))
}

/// What a test reads back from an answer: rcode, flags, and the answer
/// section's records as (type, rdata) pairs.
#[cfg(test)]
pub(crate) struct Decoded {
    pub id: u16,
    pub rcode: u8,
    pub authoritative: bool,
    pub truncated: bool,
    pub answers: Vec<(u16, Vec<u8>)>,
    pub additional: usize,
}

#[cfg(test)]
pub(crate) fn decode(p: &[u8]) -> Decoded {
    let n = |at: usize| u16::from_be_bytes([p[at], p[at + 1]]);
    let skip_name = |mut at: usize| loop {
        let l = p[at] as usize;
        if l == 0 {
            return at + 1;
        }
        if l >= 0xC0 {
            return at + 2;
        }
        at += 1 + l;
    };
    let mut at = skip_name(HEADER) + 4;
    let mut answers = Vec::new();
    for _ in 0..n(6) {
        at = skip_name(at);
        let typ = n(at);
        let len = n(at + 8) as usize;
        answers.push((typ, p[at + 10..at + 10 + len].to_vec()));
        at += 10 + len;
    }
    Decoded {
        id: n(0),
        rcode: p[3] & 0xF,
        authoritative: p[2] & 0x04 != 0,
        truncated: p[2] & 0x02 != 0,
        answers,
        additional: n(10) as usize,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reads_a_question_and_its_edns_size() {
        let q = parse(&query(7, "Web.Service.DROVER", TYPE_A, Some(4096))).unwrap();
        assert_eq!(q.id, 7);
        assert_eq!(q.name.as_deref(), Some("web.service.drover"));
        assert_eq!((q.qtype, q.qclass), (TYPE_A, CLASS_IN));
        assert_eq!(q.udp_limit(), MAX_UDP);
        let q = parse(&query(7, "web", TYPE_A, None)).unwrap();
        assert_eq!(q.udp_limit(), CLASSIC_UDP);
    }

    #[test]
    fn refuses_what_is_not_one_plain_question() {
        assert_eq!(parse(&[0; 5]), Err(Malformed::NoHeader));
        let mut p = query(1, "web", TYPE_A, None);
        p[2] |= 0x80;
        assert_eq!(parse(&p), Err(Malformed::NotQuery));
        let mut p = query(1, "web", TYPE_A, None);
        p[5] = 2;
        assert_eq!(parse(&p), Err(Malformed::Question));
        // A compression pointer looping back to itself.
        let mut p = query(1, "", TYPE_A, None);
        p.truncate(HEADER);
        p.extend_from_slice(&[0xC0, 12, 0, 1, 0, 1]);
        assert_eq!(parse(&p), Err(Malformed::Question));
        // A label running past the end.
        let mut p = query(1, "web", TYPE_A, None);
        p.truncate(HEADER + 2);
        assert_eq!(parse(&p), Err(Malformed::Question));
        // A name over 255 bytes.
        let long = vec!["a".repeat(63); 5].join(".");
        assert_eq!(
            parse(&query(1, &long, TYPE_A, None)),
            Err(Malformed::Question)
        );
    }

    #[test]
    fn a_label_with_a_dot_or_control_bytes_has_no_name() {
        let mut p = query(1, "abc.drover", TYPE_A, None);
        p[HEADER + 2] = b'.';
        assert_eq!(parse(&p).unwrap().name, None);
        p[HEADER + 2] = 0;
        assert_eq!(parse(&p).unwrap().name, None);
    }

    #[test]
    fn answers_fit_the_limit_and_say_when_they_do_not() {
        let q = parse(&query(9, "web.service.drover", TYPE_A, None)).unwrap();
        let many: Vec<Record> = (0..100u8)
            .map(|i| Record::Address(IpAddr::from([10, 0, 0, i])))
            .collect();
        let a = Answer {
            query: &q,
            rcode: 0,
            authoritative: true,
            answers: &many,
            additional: &[],
            ttl: 0,
        };
        let udp = a.encode(q.udp_limit());
        assert!(udp.len() <= CLASSIC_UDP);
        let d = decode(&udp);
        assert!(d.truncated && d.authoritative && d.id == 9);
        assert!(d.answers.len() > 20 && d.answers.len() < 100);
        assert_eq!(d.answers[0], (TYPE_A, vec![10, 0, 0, 0]));
        let tcp = decode(&a.encode(u16::MAX as usize));
        assert!(!tcp.truncated);
        assert_eq!(tcp.answers.len(), 100);
        let (id, rcode, addrs) = read_addresses(&a.encode(u16::MAX as usize)).unwrap();
        assert_eq!((id, rcode, addrs.len()), (9, 0, 100));
        assert!(read_addresses(&udp[..udp.len() - 1]).is_none());
    }

    #[test]
    fn srv_answers_carry_port_and_target_with_addresses_beside() {
        let q = parse(&query(
            3,
            "_http._tcp.web.service.drover",
            TYPE_SRV,
            Some(1232),
        ))
        .unwrap();
        let a = Answer {
            query: &q,
            rcode: 0,
            authoritative: true,
            answers: &[Record::Srv {
                port: 8080,
                target: "web-1.web.service.drover".into(),
            }],
            additional: &[Record::AddressOf(
                "web-1.web.service.drover".into(),
                IpAddr::from([10, 1, 0, 2]),
            )],
            ttl: 0,
        };
        let d = decode(&a.encode(q.udp_limit()));
        assert_eq!(d.answers.len(), 1);
        let (typ, rdata) = &d.answers[0];
        assert_eq!(*typ, TYPE_SRV);
        assert_eq!(&rdata[4..6], &8080u16.to_be_bytes());
        assert_eq!(&rdata[6..12], b"\x05web-1");
        // The address record and the OPT record.
        assert_eq!(d.additional, 2);
    }

    proptest! {
        /// Whatever a container sends, reading it neither panics nor reads
        /// past the packet, and what it reads answers within the limit.
        #[test]
        fn any_packet_is_read_or_refused(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            // Nor does reading it as an answer.
            let _ = read_addresses(&bytes);
            if let Ok(q) = parse(&bytes) {
                let a = Answer { query: &q, rcode: RCODE_NXDOMAIN, authoritative: true, answers: &[], additional: &[], ttl: 0 };
                prop_assert!(a.encode(q.udp_limit()).len() <= q.udp_limit().max(HEADER + q.question.len() + 11));
            }
        }

        #[test]
        fn any_question_reads_back(labels in proptest::collection::vec("[a-z0-9-]{1,20}", 1..6), qtype in any::<u16>()) {
            let name = labels.join(".");
            let q = parse(&query(1, &name, qtype, None)).unwrap();
            prop_assert_eq!(q.name, Some(name));
            prop_assert_eq!(q.qtype, qtype);
        }
    }
}
