//! A plugin's `[plugins."<uri>"]` section decoded over the plugin's typed defaults: the keys
//! given replace the defaults (nested tables key by key), unknown keys are warned about and
//! ignored, and a value of the wrong type is an error naming the plugin and the key.

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{keys, ConfigError};

/// Decodes `section` over `T::default()`, warning (`Ignoring unknown key in TOML for plugin`)
/// once for every key `T` does not have.
pub fn decode_plugin<T>(uri: &str, section: Option<&toml::Value>) -> Result<T, ConfigError>
where
    T: Serialize + DeserializeOwned + Default,
{
    let Some(section) = section else {
        return Ok(T::default());
    };
    let fail = |key: String, message: String| ConfigError::Plugin {
        plugin: uri.to_string(),
        key,
        message,
    };
    let toml::Value::Table(user) = section else {
        return Err(fail(
            String::new(),
            format!("expected a table, got {}", section.type_str()),
        ));
    };
    let defaults =
        toml::Table::try_from(T::default()).map_err(|err| ConfigError::Encode(err.to_string()))?;
    let mut table = defaults.clone();
    overlay(&mut table, user.clone());
    // Decoded from text rather than from a `Value`, which would hand datetimes to free-form
    // fields as strings.
    let text = toml::to_string(&table).map_err(|err| ConfigError::Encode(err.to_string()))?;
    let mut unknown = Vec::new();
    let decoded = toml::Deserializer::parse(&text).and_then(|document| {
        serde_ignored::deserialize(document, |key| unknown.push(keys::segments(&key)))
    });
    match decoded {
        Ok(value) => {
            for key in unknown {
                log::warn!(
                    "Ignoring unknown key in TOML for plugin plugin={uri} key={}",
                    keys::dotted(&key)
                );
            }
            Ok(value)
        }
        Err(err) => {
            let key = culprit::<T>(&defaults, &[], user)
                .map(|segments| keys::dotted(&segments))
                .unwrap_or_default();
            Err(fail(key, err.message().trim().to_string()))
        }
    }
}

/// Lays `src` over `dst`, table by table.
fn overlay(dst: &mut toml::Table, src: toml::Table) {
    for (key, value) in src {
        match (dst.get_mut(&key), value) {
            (Some(toml::Value::Table(have)), toml::Value::Table(add)) => overlay(have, add),
            (_, value) => {
                dst.insert(key, value);
            }
        }
    }
}

/// The innermost key of `section` (under `prefix`) that alone makes decoding fail.
fn culprit<T: DeserializeOwned>(
    defaults: &toml::Table,
    prefix: &[String],
    section: &toml::Table,
) -> Option<Vec<String>> {
    for (key, value) in section {
        let mut path = prefix.to_vec();
        path.push(key.clone());
        let mut probe = defaults.clone();
        overlay(&mut probe, nested(&path, value.clone()));
        if T::deserialize(toml::Value::Table(probe)).is_ok() {
            continue;
        }
        if let toml::Value::Table(inner) = value {
            if let Some(deeper) = culprit::<T>(defaults, &path, inner) {
                return Some(deeper);
            }
        }
        return Some(path);
    }
    None
}

/// `{path[0] = {path[1] = … value}}`.
fn nested(path: &[String], value: toml::Value) -> toml::Table {
    let mut value = value;
    for key in path.iter().skip(1).rev() {
        value = toml::Value::Table(toml::Table::from_iter([(key.clone(), value)]));
    }
    let mut table = toml::Table::new();
    if let Some(first) = path.first() {
        table.insert(first.clone(), value);
    }
    table
}

#[cfg(test)]
mod tests {
    use super::super::testlog::warnings;
    use super::*;
    use serde::Deserialize;
    use std::collections::BTreeMap;

    #[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
    #[serde(default)]
    struct Inner {
        enable: bool,
        level: i64,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    #[serde(default)]
    struct Sample {
        path: String,
        platforms: Vec<String>,
        ratio: f64,
        labels: BTreeMap<String, String>,
        inner: Inner,
    }

    impl Default for Sample {
        fn default() -> Self {
            Sample {
                path: "/opt/x".into(),
                platforms: vec!["linux/amd64".into()],
                ratio: 0.02,
                labels: BTreeMap::from([("a".to_string(), "1".to_string())]),
                inner: Inner {
                    enable: false,
                    level: 3,
                },
            }
        }
    }

    fn section(text: &str) -> toml::Value {
        toml::Value::Table(toml::from_str(text).expect(text))
    }

    #[test]
    fn an_absent_section_is_the_defaults() {
        let sample: Sample = decode_plugin("io.x.v1.y", None).expect("decode");
        assert_eq!(sample, Sample::default());
        let empty: Sample = decode_plugin("io.x.v1.y", Some(&section(""))).expect("decode");
        assert_eq!(empty, Sample::default());
    }

    #[test]
    fn given_keys_override_defaults_in_nested_tables_too() {
        let given = section(
            "path = '/p'\nbogus = 1\nplatforms = []\n[labels]\nb = '2'\n[inner]\nenable = true\nalso_bogus = 2\n",
        );
        let (sample, warnings) = warnings(|| decode_plugin::<Sample>("io.x.v1.y", Some(&given)));
        let sample = sample.expect("decode");
        assert_eq!(
            warnings,
            [
                "Ignoring unknown key in TOML for plugin plugin=io.x.v1.y key=bogus",
                "Ignoring unknown key in TOML for plugin plugin=io.x.v1.y key=inner.also_bogus",
            ]
        );
        assert_eq!(sample.path, "/p");
        assert!(sample.platforms.is_empty());
        assert_eq!(sample.ratio, 0.02);
        assert_eq!(sample.labels.len(), 2);
        assert!(sample.inner.enable);
        assert_eq!(sample.inner.level, 3);
    }

    #[test]
    fn a_wrong_type_names_the_plugin_and_the_key() {
        let err =
            decode_plugin::<Sample>("io.x.v1.y", Some(&section("path = 5\n"))).expect_err("type");
        assert!(
            err.to_string()
                .starts_with("failed to decode config for plugin io.x.v1.y key path: "),
            "{err}"
        );
        let err = decode_plugin::<Sample>(
            "io.x.v1.y",
            Some(&section(
                "path = '/ok'\n[inner]\nenable = true\nlevel = 'high'\n",
            )),
        )
        .expect_err("nested type");
        let ConfigError::Plugin { plugin, key, .. } = &err else {
            panic!("{err:?}");
        };
        assert_eq!(
            (plugin.as_str(), key.as_str()),
            ("io.x.v1.y", "inner.level")
        );
        let err = decode_plugin::<Sample>("io.x.v1.y", Some(&section("inner = 1\n")))
            .expect_err("table expected");
        assert!(err.to_string().contains(" key inner: "), "{err}");
    }

    #[test]
    fn a_section_that_is_not_a_table_is_an_error() {
        let err = decode_plugin::<Sample>("io.x.v1.y", Some(&toml::Value::Integer(1)))
            .expect_err("not a table");
        assert_eq!(
            err.to_string(),
            "failed to decode config for plugin io.x.v1.y: expected a table, got integer"
        );
    }

    #[test]
    fn free_form_sections_decode_into_tables() {
        let given = section("shim_debug = true\nwhen = 1979-05-27\n[nested.deeper]\nn = 1\n");
        let table: toml::Table = decode_plugin("io.x.v1.y", Some(&given)).expect("decode");
        assert_eq!(table, given.as_table().cloned().expect("table"));
        assert_eq!(table["shim_debug"].as_bool(), Some(true));
        assert_eq!(table["nested"]["deeper"]["n"].as_integer(), Some(1));
    }
}
