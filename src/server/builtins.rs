//! The explicit list of plugins compiled into ctrd, in registration order.

use super::Registration;
use crate::services::{
    content, deprecations, diff, events, health, introspection, leases, namespaces, snapshots,
    version, walking,
};

/// Every built-in registration. Order matters: it is the tie-breaker of the init order.
pub fn registrations() -> Vec<Registration> {
    let mut list = vec![deprecations::registration()];
    list.extend(events::registrations());
    list.extend(content::registrations());
    list.extend(snapshots::registrations());
    list.extend(namespaces::registrations());
    list.push(crate::gc::registration());
    list.extend(leases::registrations());
    list.push(walking::registration());
    list.extend(diff::registrations());
    list.extend(introspection::registrations());
    list.push(version::registration());
    list.push(health::registration());
    list
}
