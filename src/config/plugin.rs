//! A plugin's `[plugins."<uri>"]` section decoded over the plugin's typed defaults.

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::ConfigError;

/// Decodes `section` over `T::default()`: keys the user gave replace defaults (nested tables
/// merged key by key), unknown keys are warned about and ignored, a wrong type is an error
/// naming the plugin and the key.
pub fn decode_plugin<T>(uri: &str, section: Option<&toml::Value>) -> Result<T, ConfigError>
where
    T: Serialize + DeserializeOwned + Default,
{
    let Some(section) = section else {
        return Ok(T::default());
    };
    let fail = |message: String| ConfigError::Plugin {
        plugin: uri.to_string(),
        message,
    };
    let toml::Value::Table(user) = section else {
        return Err(fail(format!(
            "expected a table, got {}",
            section.type_str()
        )));
    };
    let mut table = toml::Table::try_from(T::default()).map_err(|err| fail(err.to_string()))?;
    overlay(&mut table, user.clone());
    let mut unknown = Vec::new();
    let value: T = serde_ignored::deserialize(toml::Value::Table(table), |path| {
        unknown.push(path.to_string())
    })
    .map_err(|err| fail(err.to_string().trim().to_string()))?;
    for key in unknown {
        log::warn!("Ignoring unknown key in TOML for plugin plugin={uri} key={key}");
    }
    Ok(value)
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

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
        inner: Inner,
    }

    impl Default for Sample {
        fn default() -> Self {
            Sample {
                path: "/opt/x".into(),
                platforms: vec!["linux/amd64".into()],
                inner: Inner {
                    enable: false,
                    level: 3,
                },
            }
        }
    }

    #[test]
    fn absent_section_is_the_defaults() {
        assert_eq!(
            decode_plugin::<Sample>("a.v1.b", None).expect("decode"),
            Sample::default()
        );
    }

    #[test]
    fn given_keys_override_defaults_in_nested_tables_too() {
        let section: toml::Value =
            toml::from_str("path = '/p'\nbogus = 1\n[inner]\nenable = true\n").expect("toml");
        let sample: Sample = decode_plugin("a.v1.b", Some(&section)).expect("decode");
        assert_eq!(sample.path, "/p");
        assert_eq!(sample.platforms, ["linux/amd64"]);
        assert!(sample.inner.enable);
        assert_eq!(sample.inner.level, 3);
    }

    #[test]
    fn wrong_type_names_the_plugin() {
        let section: toml::Value = toml::from_str("path = 5").expect("toml");
        let err = decode_plugin::<Sample>("a.v1.b", Some(&section)).expect_err("type");
        assert!(
            err.to_string()
                .starts_with("failed to decode config for plugin a.v1.b"),
            "{err}"
        );
    }
}
