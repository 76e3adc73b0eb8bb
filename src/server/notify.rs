//! systemd notifications (`READY=1`, `STOPPING=1`) over `$NOTIFY_SOCKET`.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// Sends `state` to systemd when `NOTIFY_SOCKET` is set; failures are logged, never fatal.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        log::debug!("systemd notification is not sent (NOTIFY_SOCKET is unset)");
        return;
    };
    let path = path.to_string_lossy().into_owned();
    match send(&path, state) {
        Ok(()) => log::debug!("systemd notification sent state={state}"),
        Err(err) => log::warn!("systemd notification failed state={state} socket={path}: {err}"),
    }
}

fn send(path: &str, state: &str) -> std::io::Result<()> {
    let socket = UnixDatagram::unbound()?;
    let addr = match path.strip_prefix('@') {
        Some(name) => SocketAddr::from_abstract_name(name.as_bytes())?,
        None => SocketAddr::from_pathname(path)?,
    };
    socket.send_to_addr(state.as_bytes(), &addr)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_state_to_a_path_socket() {
        let dir = std::env::temp_dir().join(format!("ctrd-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let receiver = UnixDatagram::bind(&path).expect("bind");
        send(path.to_str().expect("utf8"), "READY=1").expect("send");
        let mut buf = [0u8; 32];
        let n = receiver.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..n], b"READY=1");
        let _ = std::fs::remove_dir_all(dir);
    }
}
