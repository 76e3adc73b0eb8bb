//! `io.containerd.runtime.v2.task`: the shim manager as a plugin.

use std::path::PathBuf;

use super::shim::DaemonAddresses;
use super::{RuntimeConfig, TaskManager, Timeouts, RUNTIME_V2};
use crate::events::Exchange;
use crate::plugin::{properties, types, Instance, Registration};

/// `io.containerd.runtime.v2.task`.
pub fn registration() -> Registration {
    Registration::new(RUNTIME_V2, "task", |ic| {
        let config = ic.config::<RuntimeConfig>()?.clone();
        for platform in &config.platforms {
            ic.meta.platforms.push(crate::platforms::parse(platform)?);
        }
        let exchange = ic.single::<Exchange>(types::EVENT)?;
        let property = |name: &str| ic.properties.get(name).cloned().unwrap_or_default();
        let daemon = DaemonAddresses {
            grpc: property(properties::GRPC_ADDRESS),
            ttrpc: property(properties::TTRPC_ADDRESS),
            publish_binary: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("ctrd")),
            debug: log::max_level() >= log::LevelFilter::Debug,
        };
        let timeouts = Timeouts::from_config(&ic.daemon);
        let manager = TaskManager::new(ic.state(), ic.root(), daemon, exchange, config, timeouts)?;
        let ready = ic.register_readiness();
        manager.recover(ready)?;
        let closing = manager.clone();
        Ok(Instance::new(manager).with_close(move || closing.close()))
    })
    .requires(&[types::EVENT, types::METADATA])
    .config::<RuntimeConfig>()
}
