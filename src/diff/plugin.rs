//! `io.containerd.differ.v1.walking`: the walking differ over the metadata plugin's
//! namespaced content store, with the configured stream processors.

use std::path::Path;
use std::sync::Arc;

use super::differ::DifferHandle;
use super::processor::Processors;
use super::walking::{remove_stale_mounts, Walking};
use crate::metadata::Metadata;
use crate::plugin::{types, Instance, Registration};

/// `io.containerd.differ.v1.walking`; removes what a crash left mounted under
/// `<root>/tmpmounts` before it is used.
pub fn registration() -> Registration {
    Registration::new(types::DIFF, "walking", |ic| {
        let meta = ic.single::<Metadata>(types::METADATA)?;
        let processors = Processors::new(&ic.daemon.stream_processors);
        ic.meta.platforms.push(crate::platforms::host());
        let temp_mounts = Path::new(&ic.daemon.root).join("tmpmounts");
        remove_stale_mounts(&temp_mounts);
        let walking = Walking::new(meta, processors, temp_mounts);
        Ok(Instance::new(Arc::new(DifferHandle(Arc::new(walking)))))
    })
    .requires(&[types::METADATA])
}
