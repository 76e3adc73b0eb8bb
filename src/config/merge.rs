//! containerd's rules for merging one config file over what came before (the defaults, then
//! each loaded file in turn), on TOML tables:
//! - scalars, also inside `[grpc]`, `[debug]`, …: a later non-zero, non-empty value wins, so a
//!   file can never reset a value to 0, `false` or `''`;
//! - `disabled_plugins`, `required_plugins`, `imports`: appended, skipping duplicates;
//! - `plugins`: merged table by table through every level; other later values win;
//! - `timeouts`, `proxy_plugins`, `stream_processors`: merged per key, each entry replaced
//!   whole.

/// Merges a later file's table `src` into `dst`.
pub(super) fn merge(dst: &mut toml::Table, src: toml::Table) {
    for (key, value) in src {
        match key.as_str() {
            "disabled_plugins" | "required_plugins" | "imports" => append_unique(dst, key, value),
            "plugins" => match (dst.get_mut(&key), value) {
                (Some(toml::Value::Table(have)), toml::Value::Table(add)) => deep_merge(have, add),
                (_, value) => {
                    dst.insert(key, value);
                }
            },
            "timeouts" | "proxy_plugins" | "stream_processors" => {
                match (dst.get_mut(&key), value) {
                    (Some(toml::Value::Table(have)), toml::Value::Table(add)) => have.extend(add),
                    (_, value) => {
                        dst.insert(key, value);
                    }
                }
            }
            _ => merge_non_zero(dst, key, value),
        }
    }
}

fn append_unique(dst: &mut toml::Table, key: String, value: toml::Value) {
    match (dst.get_mut(&key), value) {
        (Some(toml::Value::Array(have)), toml::Value::Array(add)) => {
            for item in add {
                if !have.contains(&item) {
                    have.push(item);
                }
            }
        }
        (_, value) => merge_non_zero(dst, key, value),
    }
}

fn merge_non_zero(dst: &mut toml::Table, key: String, value: toml::Value) {
    match (dst.get_mut(&key), value) {
        (Some(toml::Value::Table(have)), toml::Value::Table(add)) => {
            for (k, v) in add {
                merge_non_zero(have, k, v);
            }
        }
        (Some(_), value) if is_zero(&value) => {}
        (_, value) => {
            dst.insert(key, value);
        }
    }
}

fn deep_merge(dst: &mut toml::Table, src: toml::Table) {
    for (key, value) in src {
        match (dst.get_mut(&key), value) {
            (Some(toml::Value::Table(have)), toml::Value::Table(add)) => deep_merge(have, add),
            (_, value) => {
                dst.insert(key, value);
            }
        }
    }
}

/// Go's zero value: what a key left out of a file would decode to.
fn is_zero(value: &toml::Value) -> bool {
    match value {
        toml::Value::String(s) => s.is_empty(),
        toml::Value::Integer(i) => *i == 0,
        toml::Value::Float(f) => *f == 0.0,
        toml::Value::Boolean(b) => !b,
        toml::Value::Array(a) => a.is_empty(),
        toml::Value::Table(t) => t.is_empty(),
        toml::Value::Datetime(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> toml::Table {
        toml::from_str(text).expect(text)
    }

    fn merged(layers: &[&str]) -> toml::Table {
        let mut out = toml::Table::new();
        for layer in layers {
            merge(&mut out, table(layer));
        }
        out
    }

    #[test]
    fn scalars_lists_and_maps_follow_containerds_rules() {
        let out = merged(&[
            "version = 2\nroot = 'old_root'\nstate = 'old_state'\noom_score = 1\n\
             required_plugins = ['io.containerd.old_plugin.v1']\n\
             disabled_plugins = ['io.containerd.old_plugin.v1']\n\
             [timeouts]\na = '1'\n\
             [stream_processors.1]\npath = '2'\nreturns = '4'\n\
             [stream_processors.2]\npath = '5'\n",
            "version = 2\nroot = 'new_root'\noom_score = 2\n\
             required_plugins = ['io.containerd.new_plugin1.v1', 'io.containerd.new_plugin2.v1']\n\
             disabled_plugins = ['io.containerd.old_plugin.v1']\n\
             [timeouts]\nb = '2'\n\
             [stream_processors.1]\npath = '3'\n",
        ]);
        let want = table(
            "version = 2\nroot = 'new_root'\nstate = 'old_state'\noom_score = 2\n\
             required_plugins = ['io.containerd.old_plugin.v1', 'io.containerd.new_plugin1.v1', 'io.containerd.new_plugin2.v1']\n\
             disabled_plugins = ['io.containerd.old_plugin.v1']\n\
             [timeouts]\na = '1'\nb = '2'\n\
             [stream_processors.1]\npath = '3'\n\
             [stream_processors.2]\npath = '5'\n",
        );
        assert_eq!(out, want);
    }

    #[test]
    fn zero_values_never_override() {
        let out = merged(&[
            "oom_score = 1\nroot = '/r'\n[grpc]\nuid = 5\naddress = '/a'\n[metrics]\ngrpc_histogram = true\n",
            "oom_score = 0\nroot = ''\n[grpc]\nuid = 0\naddress = '/b'\n[metrics]\ngrpc_histogram = false\n",
        ]);
        assert_eq!(out["oom_score"].as_integer(), Some(1));
        assert_eq!(out["root"].as_str(), Some("/r"));
        assert_eq!(out["grpc"]["uid"].as_integer(), Some(5));
        assert_eq!(out["grpc"]["address"].as_str(), Some("/b"));
        assert_eq!(out["metrics"]["grpc_histogram"].as_bool(), Some(true));
        let from_nothing = merged(&["oom_score = 0\n"]);
        assert_eq!(from_nothing["oom_score"].as_integer(), Some(0));
    }

    #[test]
    fn lists_append_without_duplicates_in_order() {
        let out = merged(&[
            "imports = ['1']\n",
            "imports = ['2']\n",
            "imports = []\n",
            "imports = ['1', '3', '2']\n",
        ]);
        let list: Vec<&str> = out["imports"]
            .as_array()
            .expect("array")
            .iter()
            .filter_map(|v| v.as_str())
            .collect();
        assert_eq!(list, ["1", "2", "3"]);
    }

    #[test]
    fn plugins_merge_through_every_level() {
        let cni_bin = "[plugins.'io.containerd.grpc.v1.cri'.cni]\nbin_dir = '/opt/cni'\n";
        let registry = "[plugins.'io.containerd.grpc.v1.cri'.registry]\nconfig_path = '/certs.d'\n";
        let cni_conf = "[plugins.'io.containerd.grpc.v1.cri'.cni]\nconf_dir = '/tmp'\n";
        for order in [[cni_bin, registry], [registry, cni_bin]] {
            let out = merged(&order);
            let cri = &out["plugins"]["io.containerd.grpc.v1.cri"];
            assert_eq!(cri["cni"]["bin_dir"].as_str(), Some("/opt/cni"));
            assert_eq!(cri["registry"]["config_path"].as_str(), Some("/certs.d"));
        }
        let out = merged(&[cni_bin, cni_conf]);
        let cni = &out["plugins"]["io.containerd.grpc.v1.cri"]["cni"];
        assert_eq!(cni["bin_dir"].as_str(), Some("/opt/cni"));
        assert_eq!(cni["conf_dir"].as_str(), Some("/tmp"));
    }

    #[test]
    fn plugin_runtimes_merge_and_later_leaves_win() {
        let runc = "[plugins.'io.containerd.grpc.v1.cri'.containerd.runtimes.runc]\n\
                    runtime_type = 'io.containerd.runc.v2'\n\
                    pod_annotations = ['a', 'b']\n\
                    [plugins.'io.containerd.grpc.v1.cri'.containerd.runtimes.runc.options]\n\
                    SystemdCgroup = true\n";
        let nvidia = "[plugins.'io.containerd.grpc.v1.cri'.containerd]\n\
                      default_runtime_name = 'nvidia'\n\
                      [plugins.'io.containerd.grpc.v1.cri'.containerd.runtimes.nvidia]\n\
                      runtime_type = 'io.containerd.runc.v2'\n";
        let runc_default = "[plugins.'io.containerd.grpc.v1.cri'.containerd]\n\
                            default_runtime_name = 'runc'\n\
                            [plugins.'io.containerd.grpc.v1.cri'.containerd.runtimes.runc]\n\
                            pod_annotations = ['c']\n\
                            [plugins.'io.containerd.grpc.v1.cri'.containerd.runtimes.runc.options]\n\
                            SystemdCgroup = false\n";
        let out = merged(&[runc, nvidia, runc_default]);
        let containerd = &out["plugins"]["io.containerd.grpc.v1.cri"]["containerd"];
        assert_eq!(containerd["default_runtime_name"].as_str(), Some("runc"));
        let runtimes = &containerd["runtimes"];
        assert_eq!(
            runtimes["nvidia"]["runtime_type"].as_str(),
            Some("io.containerd.runc.v2")
        );
        let runc = &runtimes["runc"];
        assert_eq!(runc["runtime_type"].as_str(), Some("io.containerd.runc.v2"));
        assert_eq!(runc["pod_annotations"], toml::Value::from(vec!["c"]));
        assert_eq!(runc["options"]["SystemdCgroup"].as_bool(), Some(false));
        let out = merged(&[runc_default, nvidia]);
        assert_eq!(
            out["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["default_runtime_name"]
                .as_str(),
            Some("nvidia")
        );
    }

    #[test]
    fn map_entries_are_replaced_whole() {
        let out = merged(&[
            "[proxy_plugins.p]\ntype = 'snapshot'\naddress = '/a.sock'\n\
             [timeouts]\nx = '1s'\n",
            "[proxy_plugins.p]\naddress = '/b.sock'\n[proxy_plugins.q]\naddress = '/q.sock'\n\
             [timeouts]\nx = '2s'\ny = '3s'\n",
        ]);
        let p = out["proxy_plugins"]["p"].as_table().expect("table");
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p["address"].as_str(), Some("/b.sock"));
        assert!(out["proxy_plugins"].get("q").is_some());
        assert_eq!(out["timeouts"]["x"].as_str(), Some("2s"));
        assert_eq!(out["timeouts"]["y"].as_str(), Some("3s"));
    }
}
