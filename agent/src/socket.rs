//! Unix sockets the agent listens on (the app socket and the admin socket): binding
//! with the right mode and group, replacing a stale socket file but never a live one.

use anyhow::{bail, Context, Result};
use nix::sys::socket::{
    bind, connect, listen, socket, AddressFamily, Backlog, SockFlag, SockType, UnixAddr,
};
use nix::unistd::Group;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;

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
                "group {name} does not exist: only root can connect to {}",
                path.display()
            ),
            Err(e) => log::warn!("cannot look up group {name}: {e}"),
        }
    }
    listen(&fd, Backlog::new(64).context("listen backlog")?)
        .with_context(|| format!("listening on {}", path.display()))?;
    Ok(fd)
}
