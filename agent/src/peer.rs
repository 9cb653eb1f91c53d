//! Who is at the other end of a Unix socket: the process, its user, and its groups as
//! the kernel saw them when it connected (`SO_PEERCRED`, `SO_PEERGROUPS`).

use nix::sys::socket::{getsockopt, sockopt};
use std::os::fd::{AsFd, AsRawFd};

/// The credentials of a connected peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub pid: i32,
    pub uid: u32,
    /// Its primary group.
    pub gid: u32,
    /// Its supplementary groups; `None` where the kernel cannot say (before Linux 4.13).
    pub groups: Option<Vec<u32>>,
}

/// `SO_PEERGROUPS` (Linux 4.13); the same number on every architecture dnngov runs on.
const SO_PEERGROUPS: libc::c_int = 59;

impl Peer {
    /// The credentials of `socket`'s peer.
    pub fn of(socket: &impl AsFd) -> nix::Result<Peer> {
        let credentials = getsockopt(socket, sockopt::PeerCredentials)?;
        Ok(Peer {
            pid: credentials.pid(),
            uid: credentials.uid(),
            gid: credentials.gid(),
            groups: peer_groups(socket),
        })
    }

    /// Whether the peer belongs to group `gid`: its primary group, one of its
    /// supplementary groups, or, where the kernel does not give those, a member of the
    /// group in the group database.
    pub fn in_group(&self, gid: u32) -> bool {
        if self.gid == gid {
            return true;
        }
        match &self.groups {
            Some(groups) => groups.contains(&gid),
            None => member_by_database(self.uid, gid),
        }
    }
}

fn peer_groups(socket: &impl AsFd) -> Option<Vec<u32>> {
    let fd = socket.as_fd().as_raw_fd();
    let mut groups = vec![0 as libc::gid_t; 64];
    loop {
        let mut len = (groups.len() * std::mem::size_of::<libc::gid_t>()) as libc::socklen_t;
        // SAFETY: `groups` has room for `len` bytes; the kernel writes at most that many
        // and says in `len` how many it wrote (or needs, with ERANGE).
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let count = len as usize / std::mem::size_of::<libc::gid_t>();
        if rc == 0 {
            groups.truncate(count);
            return Some(groups);
        }
        if nix::errno::Errno::last() == nix::errno::Errno::ERANGE && count > groups.len() {
            groups.resize(count, 0);
            continue;
        }
        return None;
    }
}

fn member_by_database(uid: u32, gid: u32) -> bool {
    let Ok(Some(user)) = nix::unistd::User::from_uid(uid.into()) else {
        return false;
    };
    let Ok(Some(group)) = nix::unistd::Group::from_gid(gid.into()) else {
        return false;
    };
    user.gid.as_raw() == gid || group.mem.contains(&user.name)
}

/// A user's name for messages, or its number.
pub fn user_name(uid: u32) -> String {
    match nix::unistd::User::from_uid(uid.into()) {
        Ok(Some(user)) => user.name,
        _ => format!("uid {uid}"),
    }
}

/// A group's name for messages, or its number.
pub fn group_name(gid: u32) -> String {
    match nix::unistd::Group::from_gid(gid.into()) {
        Ok(Some(group)) => group.name,
        _ => format!("gid {gid}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    #[test]
    fn a_socket_pair_shows_this_process_and_its_groups() {
        let (a, _b) = UnixStream::pair().unwrap();
        let peer = Peer::of(&a).unwrap();
        assert_eq!(peer.pid, std::process::id() as i32);
        assert_eq!(peer.uid, nix::unistd::geteuid().as_raw());
        assert_eq!(peer.gid, nix::unistd::getegid().as_raw());
        assert!(peer.in_group(peer.gid));
        let mut ours: Vec<u32> = nix::unistd::getgroups()
            .unwrap()
            .iter()
            .map(|g| g.as_raw())
            .collect();
        ours.sort();
        if let Some(mut groups) = peer.groups.clone() {
            groups.sort();
            assert_eq!(groups, ours);
        }
        let stranger = (1..u32::MAX)
            .rev()
            .find(|g| *g != peer.gid && !ours.contains(g))
            .unwrap();
        assert!(!peer.in_group(stranger));
    }
}
