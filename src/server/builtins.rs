//! The explicit list of plugins compiled into ctrd, in registration order: the one place
//! that names every built-in plugin (proxy plugins come from the config, `crate::proxy`).

use crate::plugin::Registration;
use crate::services::{
    containers, content, deprecations, diff, events, health, images, introspection, leases,
    namespaces, snapshots, tasks, version,
};

/// Every built-in registration. Order matters: it is the tie-breaker of the init order.
pub fn registrations() -> Vec<Registration> {
    let mut list = vec![deprecations::registration()];
    list.push(crate::events::plugin::registration());
    list.extend(events::registrations());
    list.push(crate::content::plugin::registration());
    list.extend(content::registrations());
    list.push(crate::snapshots::plugin::registration());
    list.push(crate::snapshots::overlay::plugin::registration());
    list.extend(snapshots::registrations());
    list.push(crate::metadata::plugin::registration());
    list.extend(namespaces::registrations());
    list.push(crate::gc::registration());
    list.extend(leases::registrations());
    list.extend(images::registrations());
    list.extend(containers::registrations());
    list.push(crate::diff::plugin::registration());
    list.extend(diff::registrations());
    list.push(crate::runtime::plugin::registration());
    list.extend(tasks::registrations());
    list.extend(introspection::registrations());
    list.push(version::registration());
    list.push(health::registration());
    list
}
