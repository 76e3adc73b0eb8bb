//! Registrations and containerd's deterministic dependency ordering.

use std::any::Any;
use std::collections::HashSet;
use std::marker::PhantomData;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{InitContext, Instance};
use crate::config::{self, ConfigError, PluginMigration};
use crate::errdefs::Error;

/// What a plugin's init function returns.
pub type InitFn = Box<dyn Fn(&mut InitContext) -> Result<Instance, Error> + Send + Sync>;

/// A plugin's typed configuration: printed by `config default`, decoded over its defaults.
pub trait ConfigSpec: Send + Sync {
    /// The plugin's section with every default, as `config default` prints it.
    fn defaults(&self) -> Result<toml::Table, ConfigError>;
    /// The user's section decoded over the defaults: the typed value and its table form.
    fn decode(
        &self,
        uri: &str,
        section: Option<&toml::Value>,
    ) -> Result<(Box<dyn Any + Send + Sync>, toml::Table), ConfigError>;
}

struct Typed<T>(PhantomData<fn() -> T>);

impl<T> ConfigSpec for Typed<T>
where
    T: Serialize + DeserializeOwned + Default + Send + Sync + 'static,
{
    fn defaults(&self) -> Result<toml::Table, ConfigError> {
        to_table(&T::default())
    }

    fn decode(
        &self,
        uri: &str,
        section: Option<&toml::Value>,
    ) -> Result<(Box<dyn Any + Send + Sync>, toml::Table), ConfigError> {
        let value: T = config::decode_plugin(uri, section)?;
        let table = to_table(&value)?;
        Ok((Box::new(value), table))
    }
}

fn to_table<T: Serialize>(value: &T) -> Result<toml::Table, ConfigError> {
    toml::Table::try_from(value).map_err(|err| ConfigError::Encode(err.to_string()))
}

/// One plugin as registered: its identity, what it needs and how to start it.
pub struct Registration {
    pub r#type: String,
    pub id: String,
    /// Types this plugin needs initialised first; `"*"` alone means every other plugin.
    pub requires: Vec<String>,
    pub config: Option<Box<dyn ConfigSpec>>,
    pub init: InitFn,
    pub config_migration: Option<PluginMigration>,
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration")
            .field("uri", &self.uri())
            .field("requires", &self.requires)
            .finish()
    }
}

impl Registration {
    pub fn new(
        r#type: impl Into<String>,
        id: impl Into<String>,
        init: impl Fn(&mut InitContext) -> Result<Instance, Error> + Send + Sync + 'static,
    ) -> Self {
        Registration {
            r#type: r#type.into(),
            id: id.into(),
            requires: Vec::new(),
            config: None,
            init: Box::new(init),
            config_migration: None,
        }
    }

    pub fn requires(mut self, types: &[&str]) -> Self {
        self.requires = types.iter().map(|t| t.to_string()).collect();
        self
    }

    /// Gives the plugin a typed config section, `T::default()` being its defaults.
    pub fn config<T>(mut self) -> Self
    where
        T: Serialize + DeserializeOwned + Default + Send + Sync + 'static,
    {
        self.config = Some(Box::new(Typed::<T>(PhantomData)));
        self
    }

    pub fn config_migration(mut self, migration: PluginMigration) -> Self {
        self.config_migration = Some(migration);
        self
    }

    /// `<type>.<id>`.
    pub fn uri(&self) -> String {
        format!("{}.{}", self.r#type, self.id)
    }
}

/// A registration or ordering problem.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RegistryError {
    #[error("plugin: no type")]
    NoType,
    #[error("plugin: no id")]
    NoId,
    #[error("{0}: plugin: id already registered")]
    Duplicate(String),
    #[error("{0}: invalid requires")]
    InvalidRequires(String),
    #[error("circular plugin dependency at {0}: plugin: dependency loop detected")]
    Cycle(String),
}

/// The ordered list of registrations.
#[derive(Default)]
pub struct Registry {
    registrations: Vec<Registration>,
}

impl Registry {
    pub fn new() -> Self {
        Registry::default()
    }

    /// Adds a registration after checking it the way containerd's registry does.
    pub fn register(&mut self, reg: Registration) -> Result<(), RegistryError> {
        if reg.r#type.is_empty() {
            return Err(RegistryError::NoType);
        }
        if reg.id.is_empty() {
            return Err(RegistryError::NoId);
        }
        let all = reg.requires.iter().any(|t| t == "*");
        if (all && reg.requires.len() != 1) || reg.requires.contains(&reg.r#type) {
            return Err(RegistryError::InvalidRequires(reg.uri()));
        }
        if self
            .registrations
            .iter()
            .any(|r| r.r#type == reg.r#type && r.id == reg.id)
        {
            return Err(RegistryError::Duplicate(reg.uri()));
        }
        self.registrations.push(reg);
        Ok(())
    }

    pub fn registrations(&self) -> &[Registration] {
        &self.registrations
    }

    /// Registrations in init order, leaving out those for which `filtered` is true (they are
    /// neither emitted nor pulled in as dependencies).
    pub fn graph(
        &self,
        filtered: impl Fn(&Registration) -> bool,
    ) -> Result<Vec<&Registration>, RegistryError> {
        let regs = &self.registrations;
        let mut handled: Vec<bool> = regs.iter().map(&filtered).collect();
        let mut ordered = Vec::with_capacity(regs.len());
        for index in 0..regs.len() {
            if handled[index] {
                continue;
            }
            let mut stack = vec![index];
            self.children(&mut stack, &mut handled, &mut ordered)?;
            handled[index] = true;
            ordered.push(index);
        }
        Ok(ordered.into_iter().map(|i| &regs[i]).collect())
    }

    /// Emits, depth first, every unhandled registration that the top of `stack` requires.
    fn children(
        &self,
        stack: &mut Vec<usize>,
        handled: &mut [bool],
        ordered: &mut Vec<usize>,
    ) -> Result<(), RegistryError> {
        let regs = &self.registrations;
        let current = *stack
            .last()
            .expect("the stack holds the plugin being expanded");
        let on_stack: HashSet<usize> = stack.iter().copied().collect();
        for wanted in &regs[current].requires {
            for (index, candidate) in regs.iter().enumerate() {
                if index == current || handled[index] {
                    continue;
                }
                if wanted != "*" && candidate.r#type != *wanted {
                    continue;
                }
                if on_stack.contains(&index) {
                    return Err(RegistryError::Cycle(candidate.uri()));
                }
                stack.push(index);
                self.children(stack, handled, ordered)?;
                stack.pop();
                handled[index] = true;
                ordered.push(index);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(t: &str, id: &str, requires: &[&str]) -> Registration {
        Registration::new(t, id, |_| Err(Error::unknown("unused"))).requires(requires)
    }

    fn order(registry: &Registry, disabled: &[&str]) -> Vec<String> {
        registry
            .graph(|r| disabled.contains(&r.uri().as_str()))
            .expect("graph")
            .iter()
            .map(|r| r.uri())
            .collect()
    }

    /// A registry shaped like containerd's: the expected order puts dependencies first and
    /// otherwise keeps registration order.
    #[test]
    fn containerd_like_registry_orders_dependencies_first() {
        let mut r = Registry::new();
        for (t, id, req) in [
            ("io.containerd.grpc.v1", "version", vec![]),
            (
                "io.containerd.grpc.v1",
                "containers",
                vec!["io.containerd.service.v1"],
            ),
            (
                "io.containerd.service.v1",
                "containers-service",
                vec!["io.containerd.metadata.v1"],
            ),
            (
                "io.containerd.metadata.v1",
                "bolt",
                vec!["io.containerd.content.v1", "io.containerd.snapshotter.v1"],
            ),
            ("io.containerd.snapshotter.v1", "native", vec![]),
            ("io.containerd.content.v1", "content", vec![]),
            ("io.containerd.snapshotter.v1", "overlayfs", vec![]),
            ("io.containerd.grpc.v1", "introspection", vec!["*"]),
        ] {
            r.register(reg(t, id, &req)).expect("register");
        }
        assert_eq!(
            order(&r, &[]),
            [
                "io.containerd.grpc.v1.version",
                "io.containerd.content.v1.content",
                "io.containerd.snapshotter.v1.native",
                "io.containerd.snapshotter.v1.overlayfs",
                "io.containerd.metadata.v1.bolt",
                "io.containerd.service.v1.containers-service",
                "io.containerd.grpc.v1.containers",
                "io.containerd.grpc.v1.introspection",
            ]
        );
    }

    #[test]
    fn star_requires_pulls_in_every_other_plugin_first() {
        let mut r = Registry::new();
        r.register(reg("a.v1", "all", &["*"])).expect("register");
        r.register(reg("b.v1", "one", &[])).expect("register");
        r.register(reg("c.v1", "two", &[])).expect("register");
        assert_eq!(order(&r, &[]), ["b.v1.one", "c.v1.two", "a.v1.all"]);
    }

    #[test]
    fn disabled_plugins_are_never_emitted_nor_pulled_in() {
        let mut r = Registry::new();
        r.register(reg("svc.v1", "s", &["meta.v1"]))
            .expect("register");
        r.register(reg("meta.v1", "bolt", &[])).expect("register");
        r.register(reg("x.v1", "x", &[])).expect("register");
        assert_eq!(order(&r, &["meta.v1.bolt"]), ["svc.v1.s", "x.v1.x"]);
    }

    #[test]
    fn requirement_without_provider_is_satisfied() {
        let mut r = Registry::new();
        r.register(reg("svc.v1", "s", &["nothing.v1"]))
            .expect("register");
        assert_eq!(order(&r, &[]), ["svc.v1.s"]);
    }

    #[test]
    fn cycle_is_an_error_not_a_panic() {
        let mut r = Registry::new();
        r.register(reg("a.v1", "a", &["b.v1"])).expect("register");
        r.register(reg("b.v1", "b", &["a.v1"])).expect("register");
        let err = r.graph(|_| false).expect_err("cycle");
        assert_eq!(err, RegistryError::Cycle("a.v1.a".into()));
        assert_eq!(
            err.to_string(),
            "circular plugin dependency at a.v1.a: plugin: dependency loop detected"
        );
    }

    #[test]
    fn register_rejects_bad_registrations() {
        let mut r = Registry::new();
        assert_eq!(r.register(reg("", "a", &[])), Err(RegistryError::NoType));
        assert_eq!(r.register(reg("t.v1", "", &[])), Err(RegistryError::NoId));
        r.register(reg("t.v1", "a", &[])).expect("register");
        let dup = r.register(reg("t.v1", "a", &[])).expect_err("duplicate");
        assert_eq!(dup.to_string(), "t.v1.a: plugin: id already registered");
        assert_eq!(
            r.register(reg("t.v1", "b", &["t.v1"])),
            Err(RegistryError::InvalidRequires("t.v1.b".into()))
        );
        assert_eq!(
            r.register(reg("t.v1", "c", &["*", "u.v1"])),
            Err(RegistryError::InvalidRequires("t.v1.c".into()))
        );
        // Same id under another type is fine.
        r.register(reg("u.v1", "a", &[])).expect("register");
    }

    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    #[serde(default)]
    struct Sample {
        path: String,
        limit: i64,
    }

    impl Default for Sample {
        fn default() -> Self {
            Sample {
                path: "/opt/ctrd".into(),
                limit: 3,
            }
        }
    }

    #[test]
    fn typed_config_decodes_over_defaults() {
        let r = reg("t.v1", "a", &[]).config::<Sample>();
        let spec = r.config.as_ref().expect("config");
        let defaults = spec.defaults().expect("defaults");
        assert_eq!(defaults["path"].as_str(), Some("/opt/ctrd"));
        let section: toml::Value = toml::from_str("limit = 9").expect("toml");
        let (value, table) = spec.decode("t.v1.a", Some(&section)).expect("decode");
        let sample = value.downcast::<Sample>().expect("type");
        assert_eq!(
            *sample,
            Sample {
                path: "/opt/ctrd".into(),
                limit: 9
            }
        );
        assert_eq!(table["limit"].as_integer(), Some(9));
        assert_eq!(table["path"].as_str(), Some("/opt/ctrd"));
    }
}
