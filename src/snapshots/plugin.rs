//! `io.containerd.snapshotter.v1.native`, and how other plugins find every loaded
//! snapshotter (the overlayfs snapshotter registers in [`super::overlay::plugin`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use super::native::Native;
use super::{Snapshotter, SnapshotterHandle};
use crate::plugin::{types, InitContext, Instance, Registration};

/// Every loaded snapshotter, by id (failed or skipped ones left out).
pub fn loaded_snapshotters(ic: &InitContext) -> BTreeMap<String, Arc<dyn Snapshotter>> {
    ic.plugins()
        .all()
        .into_iter()
        .filter(|p| p.r#type == types::SNAPSHOT)
        .filter_map(|p| {
            let handle = p.instance().ok()?.get::<SnapshotterHandle>()?;
            Some((p.id.clone(), handle.0.clone()))
        })
        .collect()
}

/// `io.containerd.snapshotter.v1.native`.
pub fn registration() -> Registration {
    Registration::new(types::SNAPSHOT, "native", |ic| {
        let root = ic.root();
        let native = Native::open(&root)?;
        ic.meta
            .exports
            .insert("root".into(), root.to_string_lossy().into_owned());
        Ok(Instance::new(Arc::new(SnapshotterHandle(Arc::new(native)))))
    })
}
