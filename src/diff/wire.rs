//! Conversions between the differ's types and the wire messages of the Diff service, for
//! the service and the proxy differ alike.

use std::collections::HashMap;

use super::differ::Payload;
use crate::api::types::Descriptor as ApiDescriptor;
use crate::api::Any;
use crate::content::Descriptor;

/// A wire descriptor as the differ's.
pub fn descriptor_from_api(desc: &ApiDescriptor) -> Descriptor {
    Descriptor {
        media_type: desc.media_type.clone(),
        digest: desc.digest.clone(),
        size: desc.size,
        annotations: desc.annotations.clone().into_iter().collect(),
    }
}

/// The differ's descriptor as the wire's.
pub fn descriptor_to_api(desc: Descriptor) -> ApiDescriptor {
    ApiDescriptor {
        media_type: desc.media_type,
        digest: desc.digest,
        size: desc.size,
        annotations: desc.annotations.into_iter().collect(),
        ..Default::default()
    }
}

/// Stream-processor payloads from the wire.
pub fn payloads_from_api(payloads: &HashMap<String, Any>) -> HashMap<String, Payload> {
    payloads
        .iter()
        .map(|(k, any)| {
            let payload = Payload {
                type_url: any.type_url.clone(),
                value: any.value.clone(),
            };
            (k.clone(), payload)
        })
        .collect()
}

/// Stream-processor payloads for the wire.
pub fn payloads_to_api(payloads: &HashMap<String, Payload>) -> HashMap<String, Any> {
    payloads
        .iter()
        .map(|(k, p)| {
            let any = Any {
                type_url: p.type_url.clone(),
                value: p.value.clone(),
                ..Default::default()
            };
            (k.clone(), any)
        })
        .collect()
}
