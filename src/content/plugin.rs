//! `io.containerd.content.v1.content`: the local store under the plugin root.

use std::sync::Arc;

use super::{ContentHandle, Store};
use crate::plugin::{types, Instance, Registration};

/// `io.containerd.content.v1.content`.
pub fn registration() -> Registration {
    Registration::new(types::CONTENT, "content", |ic| {
        let root = ic.root();
        let store = Store::open(&root)?;
        ic.meta
            .exports
            .insert("root".into(), root.to_string_lossy().into_owned());
        Ok(Instance::new(Arc::new(ContentHandle(Arc::new(store)))))
    })
}
