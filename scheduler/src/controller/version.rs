//! Raising the cluster version once every member supports a newer one (see
//! `crate::state::version`): after the last replica of a rolling upgrade
//! runs the new release, its leader commits the new version, and commands
//! that need it may be proposed from then on.

use crate::cluster::{Peer, PeerError};
use crate::state::version::{BASE, SUPPORTED};
use crate::state::Command;

/// The newest version every member of the membership (voters and
/// learners) supports, or `None` if one of them did not answer: a member
/// that cannot be asked may run an older release.
pub async fn every_member_supports(peer: &Peer) -> Option<u32> {
    let members: Vec<(u64, String)> = {
        let m = peer.metrics();
        let m = m.borrow();
        m.membership_config
            .membership()
            .nodes()
            .map(|(id, n)| (*id, n.addr.clone()))
            .collect()
    };
    let asks = members.into_iter().map(|(id, addr)| async move {
        if id == peer.id {
            return Some(SUPPORTED);
        }
        let s = peer.status_of(&addr).await?;
        // A release from before versions answers 0.
        Some(s.supports_version.max(BASE))
    });
    let answers = futures::future::join_all(asks).await;
    answers
        .into_iter()
        .collect::<Option<Vec<u32>>>()?
        .into_iter()
        .min()
}

/// Commits a newer cluster version if every member supports one.
pub async fn raise(peer: &Peer) -> Result<(), PeerError> {
    let runs = peer.cluster_version();
    if runs >= SUPPORTED {
        return Ok(());
    }
    let Some(all) = every_member_supports(peer).await else {
        return Ok(());
    };
    if all > runs {
        tracing::info!(
            from = runs,
            to = all,
            "every member supports a newer cluster version: raising it"
        );
        let r = peer
            .write(Command::SetClusterVersion { version: all })
            .await?;
        if let Err(why) = r.accepted() {
            tracing::warn!(error = %why, "raising the cluster version was refused");
        }
    }
    Ok(())
}
