//! Unix sockets the agent listens on (the app socket and the admin socket): binding
//! with the right mode and group, replacing a stale socket file but never a live one.

use anyhow::{bail, Context, Result};
use nix::poll::PollTimeout;
use nix::sys::socket::{
    bind, connect, listen, socket, AddressFamily, Backlog, SockFlag, SockType, UnixAddr,
};
use nix::unistd::Group;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::time::Instant;

/// Binds `path`, replacing a stale socket file but never a live one.
pub fn bind_seqpacket(path: &Path, group: Option<&str>) -> Result<OwnedFd> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the socket directory {}", dir.display()))?;
    }
    let addr = UnixAddr::new(path).with_context(|| format!("socket path {}", path.display()))?;
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            let probe = socket(
                AddressFamily::Unix,
                SockType::SeqPacket,
                SockFlag::SOCK_CLOEXEC,
                None,
            )
            .context("creating a probe socket")?;
            if connect(probe.as_raw_fd(), &addr).is_ok() {
                bail!(
                    "another agent is listening on {}: stop it first (systemctl stop dnngovd)",
                    path.display()
                );
            }
            log::info!("replacing stale socket {}", path.display());
            std::fs::remove_file(path)
                .with_context(|| format!("removing stale socket {}", path.display()))?;
        }
        Ok(_) => bail!(
            "{} exists and is not a socket; refusing to replace it",
            path.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("inspecting {}", path.display())),
    }
    let fd = socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )
    .context("creating the app socket")?;
    bind(fd.as_raw_fd(), &addr).with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .with_context(|| format!("setting mode 0660 on {}", path.display()))?;
    if let Some(name) = group {
        match Group::from_name(name) {
            Ok(Some(group)) => {
                nix::unistd::chown(path, None, Some(group.gid))
                    .with_context(|| format!("giving {} to group {name}", path.display()))?;
            }
            Ok(None) => log::info!(
                "group {name} does not exist: {}",
                who_can_connect(path).context("inspecting the new socket")?
            ),
            Err(e) => log::warn!(
                "cannot look up group {name}: {e}; {}",
                who_can_connect(path).context("inspecting the new socket")?
            ),
        }
    }
    listen(&fd, Backlog::new(64).context("listen backlog")?)
        .with_context(|| format!("listening on {}", path.display()))?;
    Ok(fd)
}

/// Who the socket file at `path` lets connect, from its owner, group and mode (0660):
/// root, its owner and the members of its group. Read from the file, not assumed, since
/// a set-group-id directory gives its own group to what is created in it.
fn who_can_connect(path: &Path) -> Result<String> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path)?;
    let (owner, group) = (
        crate::peer::user_name(meta.uid()),
        crate::peer::group_name(meta.gid()),
    );
    let users = if meta.uid() == 0 {
        "root".to_string()
    } else {
        format!("root, user {owner}")
    };
    Ok(format!(
        "{} is {owner}:{group} with mode {:04o}, so only {users} and members of group {group} \
         can connect to it",
        path.display(),
        meta.mode() & 0o7777,
    ))
}

/// Whether the other end of `socket` has closed it (as opposed to sending an empty
/// packet, which also reads as 0 bytes).
pub fn hung_up(socket: &OwnedFd) -> bool {
    // nix's PollFlags lacks POLLRDHUP, the flag that tells the two apart.
    let mut fd = libc::pollfd {
        fd: socket.as_raw_fd(),
        events: libc::POLLRDHUP,
        revents: 0,
    };
    // SAFETY: one valid pollfd, a zero timeout.
    let rc = unsafe { libc::poll(&mut fd, 1, 0) };
    rc < 0 || fd.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0
}

/// A poll timeout that ends at `at` (none: wait for an event).
pub fn timeout_until(at: Option<Instant>) -> PollTimeout {
    let Some(at) = at else {
        return PollTimeout::NONE;
    };
    // Rounded up, so a wake-up never comes just before the deadline it is for.
    let millis = at
        .saturating_duration_since(Instant::now())
        .as_micros()
        .div_ceil(1000);
    PollTimeout::try_from(millis.min(i32::MAX as u128) as i32).unwrap_or(PollTimeout::MAX)
}
