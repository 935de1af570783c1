//! The gRPC codec of every Drover service: prost's, except that a desired
//! set may arrive at the encoder already encoded.
//!
//! A watch stream's delta is mostly the part every node shares (the names,
//! services and routes that changed). Encoded per stream, a burst of new
//! replicas cost each of a thousand streams a copy and an encoding of the
//! same names, which starved the peers' Raft tasks until leaders lost their
//! majority. The fan-out encodes that part once per view and each stream
//! sends those bytes followed by its node's own part: protobuf reads two
//! encodings one after the other as one message whose lists hold both
//! (`DesiredAllocations.pre_encoded`).
//!
//! Events fan out the same way: each is encoded once when applied, and a
//! subscriber's batch is those encodings one after another
//! (`EventBatch.pre_encoded`).

use crate::pb::{DesiredAllocations, EventBatch};
use prost::bytes::BufMut;
use prost::Message;
use std::any::Any;
use std::marker::PhantomData;
use tonic::codec::{DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::Status;

/// prost's codec, but for a [`DesiredAllocations`] or an [`EventBatch`]
/// with `pre_encoded` set, which goes as those bytes.
#[derive(Debug, Clone)]
pub struct Codec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for Codec<T, U> {
    fn default() -> Self {
        Codec(PhantomData)
    }
}

impl<T, U> tonic::codec::Codec for Codec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = Encode<T>;
    type Decoder = Decode<U>;

    fn encoder(&mut self) -> Encode<T> {
        Encode(PhantomData)
    }

    fn decoder(&mut self) -> Decode<U> {
        Decode(tonic_prost::ProstDecoder::default())
    }
}

#[derive(Debug)]
pub struct Encode<T>(PhantomData<T>);

impl<T: Message + 'static> Encoder for Encode<T> {
    type Item = T;
    type Error = Status;

    fn encode(&mut self, item: T, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        let any = &item as &dyn Any;
        let pre_encoded = match (
            any.downcast_ref::<DesiredAllocations>(),
            any.downcast_ref::<EventBatch>(),
        ) {
            (Some(set), _) => set.pre_encoded.as_slice(),
            (_, Some(batch)) => batch.pre_encoded.as_slice(),
            _ => &[],
        };
        if !pre_encoded.is_empty() {
            buf.put_slice(pre_encoded);
            return Ok(());
        }
        item.encode(buf)
            .map_err(|e| Status::internal(format!("encoding a message: {e}")))
    }
}

#[derive(Debug)]
pub struct Decode<U>(tonic_prost::ProstDecoder<U>);

impl<U: Message + Default> Decoder for Decode<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.0.decode(buf)
    }
}

/// `set` as a receiver reads it: its `pre_encoded` bytes decoded, when it
/// has them.
pub fn as_received(set: DesiredAllocations) -> Result<DesiredAllocations, prost::DecodeError> {
    if set.pre_encoded.is_empty() {
        return Ok(set);
    }
    DesiredAllocations::decode(set.pre_encoded.as_slice())
}

/// `shared` (encoded) then `own`, as one message: what a receiver reads is
/// `own` with the lists of `shared` added.
pub fn joined(shared: &[u8], own: &DesiredAllocations) -> DesiredAllocations {
    let mut bytes = Vec::with_capacity(shared.len() + own.encoded_len());
    bytes.extend_from_slice(shared);
    own.encode(&mut bytes).expect("a Vec grows");
    DesiredAllocations {
        pre_encoded: bytes,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::{DesiredAllocation, NamedReplica, NodeRoute, ServiceName};

    #[test]
    fn a_shared_part_and_a_nodes_own_read_as_one_message() {
        let shared = DesiredAllocations {
            index: 7,
            delta: true,
            names: vec![ServiceName {
                job: "web".into(),
                replicas: vec![NamedReplica {
                    name: "web-0".into(),
                    ip: "10.0.0.2".into(),
                }],
                ports: vec![],
            }],
            routes: vec![NodeRoute {
                node: "b".into(),
                subnet: "10.0.1.0/24".into(),
                via: "192.168.1.2".into(),
            }],
            routes_removed: vec!["c".into()],
            ..Default::default()
        };
        let own = DesiredAllocations {
            index: 9,
            delta: true,
            allocations: vec![DesiredAllocation {
                id: "a1".into(),
                job: "web".into(),
                ..Default::default()
            }],
            stopping_removed: vec!["a0".into()],
            ..Default::default()
        };
        let sent = joined(&shared.encode_to_vec(), &own);
        let read = as_received(sent.clone()).unwrap();
        let mut want = own.clone();
        want.names = shared.names.clone();
        want.routes = shared.routes.clone();
        want.routes_removed = shared.routes_removed.clone();
        assert_eq!(read, want);
        // A message without them is itself.
        assert_eq!(as_received(own.clone()).unwrap(), own);
    }
}
