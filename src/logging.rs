//! Log output in containerd's logrus style: `time="…" level=info msg="…"`, or JSON.

use std::io::Write;

/// Parses a containerd log level name.
pub fn parse_level(level: &str) -> Option<log::LevelFilter> {
    Some(match level {
        "trace" => log::LevelFilter::Trace,
        "debug" => log::LevelFilter::Debug,
        "" | "info" => log::LevelFilter::Info,
        "warn" | "warning" => log::LevelFilter::Warn,
        "error" | "fatal" | "panic" => log::LevelFilter::Error,
        _ => return None,
    })
}

/// Installs the logger on stderr. `format` is `text` (default) or `json`.
pub fn init(level: log::LevelFilter, json: bool) {
    let mut builder = env_logger::Builder::new();
    builder.filter_level(level);
    // gRPC core's own chatter is only interesting when debugging.
    builder.filter_module("grpcio", level.min(log::LevelFilter::Warn));
    builder.format(move |buf, record| {
        let time = buf.timestamp_nanos();
        let level = match record.level() {
            log::Level::Error => "error",
            log::Level::Warn => "warning",
            log::Level::Info => "info",
            log::Level::Debug => "debug",
            log::Level::Trace => "trace",
        };
        let msg = record.args().to_string();
        if json {
            writeln!(
                buf,
                "{{\"level\":\"{level}\",\"msg\":{},\"time\":\"{time}\"}}",
                quote(&msg)
            )
        } else {
            writeln!(buf, "time=\"{time}\" level={level} msg={}", quote(&msg))
        }
    });
    // A second initialisation (tests) keeps the first logger.
    let _ = builder.try_init();
}

/// A double-quoted string escaped so that it is valid both in a logfmt line and in JSON.
pub fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_follow_containerd_names() {
        assert_eq!(parse_level("debug"), Some(log::LevelFilter::Debug));
        assert_eq!(parse_level(""), Some(log::LevelFilter::Info));
        assert_eq!(parse_level("fatal"), Some(log::LevelFilter::Error));
        assert_eq!(parse_level("loud"), None);
    }

    #[test]
    fn messages_are_quoted_and_escaped() {
        assert_eq!(quote("a \"b\"\nc"), "\"a \\\"b\\\"\\nc\"");
        assert_eq!(quote("a\"b\\\n"), "\"a\\\"b\\\\\\n\"");
    }
}
