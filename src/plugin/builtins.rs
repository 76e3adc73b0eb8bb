//! The explicit list of plugins compiled into ctrd, in registration order.

use super::Registration;
use crate::services::{deprecations, events, health, introspection, namespaces, version};

/// Every built-in registration. Order matters: it is the tie-breaker of the init order.
pub fn registrations() -> Vec<Registration> {
    let mut list = vec![deprecations::registration()];
    list.extend(events::registrations());
    list.extend(namespaces::registrations());
    list.extend(introspection::registrations());
    list.push(version::registration());
    list.push(health::registration());
    list
}
