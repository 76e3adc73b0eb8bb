//! External plugins: `[proxy_plugins.<name>]` entries become plugins whose calls go over
//! gRPC to another process, as containerd's proxy plugins do.
//!
//! * `type` is `snapshot`, `content` or `diff` (or the full plugin type); the plugin is
//!   `<type>.<name>`, with no requirements, registered after the built-ins.
//! * One channel per distinct `address` (a unix socket path or `host:port`), created at
//!   init but connected lazily; reconnection backs off up to 3 s, so while the external
//!   process is down calls fail with Unavailable and they work again once it is back.
//! * `platform` is parsed (a bad one is warned about and left out; unset means the host's);
//!   exports are copied with `address` added; capabilities are passed through.
//! * Any other type is warned about and not registered.

pub mod content;
pub mod diff;
pub mod snapshots;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use grpcio::{Channel, ChannelBuilder, EnvBuilder, Environment};
use parking_lot::Mutex;

use crate::config::{Config, ProxyPlugin};
use crate::content::ContentHandle;
use crate::diff::DifferHandle;
use crate::platforms;
use crate::plugin::{types, Instance, Registration};
use crate::snapshots::SnapshotterHandle;

/// The size limit both ways, as containerd dials its proxies.
const MAX_MESSAGE: usize = 16 << 20;

/// The longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(3);

/// One channel per address, shared by every proxy plugin that names it.
#[derive(Default, Clone)]
pub struct Channels {
    env: Arc<Mutex<Option<Arc<Environment>>>>,
    by_address: Arc<Mutex<HashMap<String, Channel>>>,
}

impl Channels {
    /// The channel for `address`, created on first use.
    pub fn get(&self, address: &str) -> Channel {
        let mut cache = self.by_address.lock();
        if let Some(channel) = cache.get(address) {
            return channel.clone();
        }
        let env = self
            .env
            .lock()
            .get_or_insert_with(|| {
                crate::sys::start_grpc_core();
                Arc::new(
                    EnvBuilder::new()
                        .cq_count(1)
                        .name_prefix("ctrd-proxy-cq")
                        .build(),
                )
            })
            .clone();
        let target = if address.starts_with('/') {
            format!("unix:{address}")
        } else if let Some(path) = address.strip_prefix("unix://") {
            format!("unix:{path}")
        } else {
            address.to_string()
        };
        let channel = ChannelBuilder::new(env)
            .max_receive_message_len(MAX_MESSAGE as i32)
            .max_send_message_len(MAX_MESSAGE as i32)
            .initial_reconnect_backoff(Duration::from_millis(100))
            .max_reconnect_backoff(MAX_BACKOFF)
            .connect(&target);
        cache.insert(address.to_string(), channel.clone());
        channel
    }
}

/// Call options carrying the namespace header.
pub fn with_namespace(ns: &str) -> grpcio::CallOption {
    with_headers(ns, None)
}

/// Call options carrying the namespace header and, when given, the lease header.
pub fn with_headers(ns: &str, lease: Option<&str>) -> grpcio::CallOption {
    let mut headers = grpcio::MetadataBuilder::new();
    // Both are header-safe: a namespace is an identifier and a lease came in as a header.
    if !ns.is_empty() {
        let _ = headers.add_str(crate::rpc::NAMESPACE_HEADER, ns);
    }
    if let Some(lease) = lease {
        let _ = headers.add_str(crate::rpc::LEASE_HEADER, lease);
    }
    grpcio::CallOption::default().headers(headers.build())
}

/// The plugin type a proxy `type` names, or None when it is not one ctrd can proxy.
pub fn plugin_type(value: &str) -> Option<&'static str> {
    match value {
        "snapshot" | types::SNAPSHOT => Some(types::SNAPSHOT),
        "content" | types::CONTENT => Some(types::CONTENT),
        "diff" | types::DIFF => Some(types::DIFF),
        _ => None,
    }
}

/// A registration per usable `[proxy_plugins.<name>]`, in name order.
pub fn registrations(config: &Config, channels: &Channels) -> Vec<Registration> {
    let mut out = Vec::new();
    for (name, proxy) in &config.proxy_plugins {
        let Some(r#type) = plugin_type(&proxy.r#type) else {
            log::warn!(
                "unknown proxy plugin type {:?} for proxy plugin {name:?}: expected snapshot, content or diff; not loaded",
                proxy.r#type
            );
            continue;
        };
        out.push(registration(r#type, name, proxy.clone(), channels.clone()));
    }
    out
}

fn registration(
    r#type: &'static str,
    name: &str,
    proxy: ProxyPlugin,
    channels: Channels,
) -> Registration {
    let id = name.to_string();
    Registration::new(r#type, name, move |ic| {
        let platform = if proxy.platform.is_empty() {
            Some(platforms::host())
        } else {
            match platforms::parse(&proxy.platform) {
                Ok(p) => Some(p),
                Err(err) => {
                    log::warn!(
                        "skipping proxy platform with bad platform {:?}: {err}",
                        proxy.platform
                    );
                    None
                }
            }
        };
        ic.meta.platforms.extend(platform);
        ic.meta.exports.extend(proxy.exports.clone());
        ic.meta
            .exports
            .insert("address".into(), proxy.address.clone());
        ic.meta.capabilities = proxy.capabilities.clone();
        let channel = channels.get(&proxy.address);
        match r#type {
            types::SNAPSHOT => {
                let remote = snapshots::ProxySnapshotter::new(channel, &id);
                Ok(Instance::new(Arc::new(SnapshotterHandle(Arc::new(remote)))))
            }
            types::CONTENT => {
                let remote = content::ProxyContent::new(channel);
                Ok(Instance::new(Arc::new(ContentHandle(Arc::new(remote)))))
            }
            _ => {
                let remote = diff::ProxyDiffer::new(channel);
                Ok(Instance::new(Arc::new(DifferHandle(Arc::new(remote)))))
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_full_and_short() {
        assert_eq!(plugin_type("snapshot"), Some(types::SNAPSHOT));
        assert_eq!(
            plugin_type("io.containerd.content.v1"),
            Some(types::CONTENT)
        );
        assert_eq!(plugin_type("diff"), Some(types::DIFF));
        assert_eq!(plugin_type("sandbox"), None);
        assert_eq!(plugin_type("bogus"), None);
    }
}
