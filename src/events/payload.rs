//! Filtering on an event's payload (`event.<field>`): the payload is decoded by its type URL
//! and its fields looked up by proto name, the way containerd's generated field-path
//! adaptors answer:
//! * a string field matches when it is set (non-empty), with its value;
//! * a bool field always has a value, `true` or `false`;
//! * a `map<string, string>` field takes the rest of the path, joined by `.`, as its key;
//! * a message field passes the rest of the path on to the message;
//! * numbers, timestamps, lists and `Any` fields have no value.
//!
//! Payloads of a type the daemon does not know have no fields.

use protobuf::reflect::{
    FileDescriptor, MessageDescriptor, ReflectValueRef, RuntimeFieldType, RuntimeType,
};
use protobuf::MessageDyn;

use crate::api::events_payload_files;
use crate::api::Any;

/// The descriptor of the event type `type_url` names (bare, or with a `type.googleapis.com/`
/// prefix).
pub fn descriptor(type_url: &str) -> Option<MessageDescriptor> {
    let name = type_url.rsplit('/').next().unwrap_or(type_url);
    let full = format!(".{name}");
    events_payload_files()
        .iter()
        .find_map(|file: &FileDescriptor| file.message_by_full_name(&full))
}

/// Decodes `any` if its type is known.
pub fn decode(any: &Any) -> Option<Box<dyn MessageDyn>> {
    let desc = descriptor(&any.type_url)?;
    let mut msg = desc.new_instance();
    msg.merge_from_bytes_dyn(&any.value).ok()?;
    Some(msg)
}

/// The value of `path` in `msg`, if it has one (see the module documentation).
pub fn field(msg: &dyn MessageDyn, path: &[String]) -> Option<String> {
    let (name, rest) = path.split_first()?;
    let desc = msg.descriptor_dyn();
    let field = desc.field_by_name(name)?;
    match field.runtime_field_type() {
        RuntimeFieldType::Singular(RuntimeType::String) => {
            match field.get_singular_field_or_default(msg) {
                ReflectValueRef::String(s) if !s.is_empty() && rest.is_empty() => {
                    Some(s.to_string())
                }
                _ => None,
            }
        }
        RuntimeFieldType::Singular(RuntimeType::Bool) if rest.is_empty() => {
            match field.get_singular_field_or_default(msg) {
                ReflectValueRef::Bool(b) => Some(b.to_string()),
                _ => None,
            }
        }
        RuntimeFieldType::Singular(RuntimeType::Message(_)) => match field.get_singular(msg)? {
            ReflectValueRef::Message(inner) => field_of_message(&*inner, rest),
            _ => None,
        },
        RuntimeFieldType::Map(RuntimeType::String, RuntimeType::String) => {
            if rest.is_empty() {
                return None;
            }
            let key = rest.join(".");
            let map = field.get_map(msg);
            match map.get(ReflectValueRef::String(&key))? {
                ReflectValueRef::String(v) => Some(v.to_string()),
                _ => None,
            }
        }
        _ => None,
    }
}

fn field_of_message(msg: &dyn MessageDyn, path: &[String]) -> Option<String> {
    // Any payloads are opaque here, as in containerd.
    if msg.descriptor_dyn().full_name() == "google.protobuf.Any" {
        return None;
    }
    field(msg, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::event_types::{ContainerCreate, NamespaceCreate, TaskExit, TaskIO};
    use crate::events::any_of;

    fn path(p: &str) -> Vec<String> {
        p.split('.').map(str::to_string).collect()
    }

    #[test]
    fn strings_maps_bools_and_nested_messages() {
        let mut create = NamespaceCreate {
            name: "edge".into(),
            ..Default::default()
        };
        create.labels.insert("a.b".into(), "c".into());
        let msg = decode(&any_of(&create).unwrap()).expect("known type");
        assert_eq!(field(&*msg, &path("name")).as_deref(), Some("edge"));
        assert_eq!(field(&*msg, &path("labels.a.b")).as_deref(), Some("c"));
        assert_eq!(field(&*msg, &path("labels")), None);
        assert_eq!(field(&*msg, &path("nope")), None);

        let exit = TaskExit {
            container_id: "c1".into(),
            pid: 42,
            ..Default::default()
        };
        let msg = decode(&any_of(&exit).unwrap()).unwrap();
        assert_eq!(field(&*msg, &path("container_id")).as_deref(), Some("c1"));
        assert_eq!(
            field(&*msg, &path("id")),
            None,
            "empty strings have no value"
        );
        assert_eq!(field(&*msg, &path("pid")), None, "numbers are not adapted");

        let io = TaskIO::default();
        let msg = decode(&any_of(&io).unwrap()).unwrap();
        assert_eq!(field(&*msg, &path("terminal")).as_deref(), Some("false"));

        let mut container = ContainerCreate {
            id: "web".into(),
            ..Default::default()
        };
        container.runtime.mut_or_insert_default().name = "io.containerd.runc.v2".into();
        let msg = decode(&any_of(&container).unwrap()).unwrap();
        assert_eq!(
            field(&*msg, &path("runtime.name")).as_deref(),
            Some("io.containerd.runc.v2")
        );
        assert_eq!(field(&*msg, &path("runtime.options")), None);
    }

    #[test]
    fn unknown_and_prefixed_type_urls() {
        assert!(descriptor("containerd.events.TaskOOM").is_some());
        assert!(descriptor("type.googleapis.com/containerd.events.TaskOOM").is_some());
        assert!(descriptor("containerd.events.Nope").is_none());
        assert!(descriptor("").is_none());
        let junk = Any {
            type_url: "containerd.events.TaskOOM".into(),
            value: vec![0xff, 0xff],
            ..Default::default()
        };
        assert!(
            decode(&junk).is_none(),
            "undecodable payloads have no fields"
        );
    }
}
