//! The set of initialised plugins, in init order, with containerd's lookup semantics.

use std::any::Any;
use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::RwLock;

use super::{is_skip, Instance};
use crate::errdefs::{Class, Error};

/// What a plugin tells introspection about itself.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Meta {
    pub platforms: Vec<oci_spec::image::Platform>,
    pub exports: BTreeMap<String, String>,
    pub capabilities: Vec<String>,
}

/// One plugin after its init ran, successful or not.
pub struct Plugin {
    pub r#type: String,
    pub id: String,
    pub requires: Vec<String>,
    pub meta: Meta,
    /// The decoded config section, when the plugin has one.
    pub config: Option<toml::Table>,
    pub result: Result<Instance, Error>,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("uri", &self.uri())
            .field("error", &self.err())
            .finish()
    }
}

impl Plugin {
    pub fn uri(&self) -> String {
        format!("{}.{}", self.r#type, self.id)
    }

    pub fn instance(&self) -> Result<&Instance, &Error> {
        self.result.as_ref()
    }

    pub fn err(&self) -> Option<&Error> {
        self.result.as_ref().err()
    }
}

/// Shared, append-only list of plugins; cloning shares it, so a service can see plugins that
/// were initialised after it.
#[derive(Clone, Default)]
pub struct Set {
    inner: Arc<RwLock<Vec<Arc<Plugin>>>>,
}

impl std::fmt::Debug for Set {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.inner.read().iter().map(|p| p.uri()))
            .finish()
    }
}

impl Set {
    pub fn new() -> Self {
        Set::default()
    }

    /// Adds a plugin; a second plugin with the same URI is refused.
    pub fn add(&self, plugin: Plugin) -> Result<Arc<Plugin>, Error> {
        let mut list = self.inner.write();
        if list
            .iter()
            .any(|p| p.r#type == plugin.r#type && p.id == plugin.id)
        {
            return Err(Error::new(
                Class::AlreadyExists,
                format!(
                    "plugin add failed for {}: plugin: already initialized",
                    plugin.uri()
                ),
            ));
        }
        let plugin = Arc::new(plugin);
        list.push(plugin.clone());
        Ok(plugin)
    }

    /// Every plugin in init order.
    pub fn all(&self) -> Vec<Arc<Plugin>> {
        self.inner.read().clone()
    }

    pub fn len(&self) -> usize {
        self.inner.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn get(&self, r#type: &str, id: &str) -> Option<Arc<Plugin>> {
        self.inner
            .read()
            .iter()
            .find(|p| p.r#type == r#type && p.id == id)
            .cloned()
    }

    /// The single usable plugin of a type: skipped ones are ignored, the first other failure
    /// is returned, and zero or several usable ones are errors.
    pub fn get_single(&self, r#type: &str) -> Result<Arc<Plugin>, Error> {
        let mut found: Option<Arc<Plugin>> = None;
        for plugin in self.of_type(r#type) {
            match &plugin.result {
                Err(err) if is_skip(err) => continue,
                Err(err) => return Err(err.clone()),
                Ok(_) if found.is_some() => {
                    return Err(Error::new(
                        Class::FailedPrecondition,
                        format!(
                            "multiple plugins registered for {type}: plugin: multiple instances"
                        ),
                    ))
                }
                Ok(_) => found = Some(plugin),
            }
        }
        found.ok_or_else(|| not_found(r#type))
    }

    /// Usable plugins of a type by id; any failure other than a skip fails the whole lookup.
    pub fn get_by_type(&self, r#type: &str) -> Result<BTreeMap<String, Arc<Plugin>>, Error> {
        let mut found = BTreeMap::new();
        for plugin in self.of_type(r#type) {
            match &plugin.result {
                Err(err) if is_skip(err) => continue,
                Err(err) => return Err(err.clone()),
                Ok(_) => {
                    found.insert(plugin.id.clone(), plugin);
                }
            }
        }
        if found.is_empty() {
            return Err(not_found(r#type));
        }
        Ok(found)
    }

    /// The plugin `<type>.<id>`; its init error if it failed.
    pub fn get_by_id(&self, r#type: &str, id: &str) -> Result<Arc<Plugin>, Error> {
        let plugin = self
            .get(r#type, id)
            .ok_or_else(|| not_found(&format!("{type}.{id}")))?;
        if let Err(err) = &plugin.result {
            return Err(err.clone());
        }
        Ok(plugin)
    }

    /// The value of a usable plugin `<type>.<id>` as `T`.
    pub fn value<T: Any + Send + Sync>(&self, r#type: &str, id: &str) -> Option<Arc<T>> {
        let plugin = self.get(r#type, id)?;
        plugin.result.as_ref().ok()?.get::<T>()
    }

    fn of_type(&self, r#type: &str) -> Vec<Arc<Plugin>> {
        self.inner
            .read()
            .iter()
            .filter(|p| p.r#type == r#type)
            .cloned()
            .collect()
    }
}

fn not_found(what: &str) -> Error {
    Error::new(
        Class::NotFound,
        format!("no plugins registered for {what}: plugin: not found"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::skip;

    fn plugin(t: &str, id: &str, result: Result<u32, Error>) -> Plugin {
        Plugin {
            r#type: t.into(),
            id: id.into(),
            requires: vec![],
            meta: Meta::default(),
            config: None,
            result: result.map(|v| Instance::new(Arc::new(v))),
        }
    }

    #[test]
    fn duplicate_add_is_refused() {
        let set = Set::new();
        set.add(plugin("t.v1", "a", Ok(1))).expect("add");
        let err = set.add(plugin("t.v1", "a", Ok(2))).expect_err("dup");
        assert_eq!(
            err.message(),
            "plugin add failed for t.v1.a: plugin: already initialized"
        );
    }

    #[test]
    fn get_single_skips_skipped_and_reports_failures() {
        let set = Set::new();
        set.add(plugin("t.v1", "skipped", Err(skip("no disk"))))
            .expect("add");
        set.add(plugin("t.v1", "good", Ok(7))).expect("add");
        assert_eq!(set.get_single("t.v1").expect("single").id, "good");

        set.add(plugin("t.v1", "bad", Err(Error::unknown("boom"))))
            .expect("add");
        assert_eq!(set.get_single("t.v1").expect_err("err").message(), "boom");

        let empty = Set::new();
        assert_eq!(
            empty.get_single("x.v1").expect_err("err").message(),
            "no plugins registered for x.v1: plugin: not found"
        );
    }

    #[test]
    fn get_single_refuses_two_usable_plugins() {
        let set = Set::new();
        set.add(plugin("t.v1", "a", Ok(1))).expect("add");
        set.add(plugin("t.v1", "b", Ok(2))).expect("add");
        assert!(set
            .get_single("t.v1")
            .expect_err("err")
            .message()
            .contains("multiple instances"));
    }

    #[test]
    fn get_by_type_fails_when_any_plugin_failed() {
        let set = Set::new();
        set.add(plugin("t.v1", "a", Ok(1))).expect("add");
        set.add(plugin("t.v1", "s", Err(skip("")))).expect("add");
        assert_eq!(
            set.get_by_type("t.v1")
                .expect("ok")
                .keys()
                .collect::<Vec<_>>(),
            ["a"]
        );
        set.add(plugin("t.v1", "b", Err(Error::unknown("broken"))))
            .expect("add");
        assert_eq!(
            set.get_by_type("t.v1").expect_err("err").message(),
            "broken"
        );
    }

    #[test]
    fn get_by_id_and_typed_value() {
        let set = Set::new();
        set.add(plugin("t.v1", "a", Ok(41))).expect("add");
        assert_eq!(*set.value::<u32>("t.v1", "a").expect("value"), 41);
        assert!(set.value::<String>("t.v1", "a").is_none());
        assert_eq!(
            set.get_by_id("t.v1", "zz").expect_err("err").message(),
            "no plugins registered for t.v1.zz: plugin: not found"
        );
    }
}
