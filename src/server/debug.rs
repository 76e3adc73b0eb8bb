//! The debug endpoints: `/debug/vars` (JSON), `/debug/pprof/` (index), a CPU profile at
//! `/debug/pprof/profile?seconds=N`, a thread dump at `/debug/pprof/threads` (every thread
//! by id and name with its job, then every stack) and each task's shim log at
//! `/debug/shims/<ns>/<id>/log`.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use super::http::Reply;
use crate::logging::quote;
use crate::plugin::Set;

/// The longest CPU profile one request may ask for.
const MAX_PROFILE: Duration = Duration::from_secs(60);

/// State the debug endpoints report on.
pub struct Debug {
    started: Instant,
    plugins: Set,
}

impl Debug {
    pub fn new(started: Instant, plugins: Set) -> Debug {
        Debug { started, plugins }
    }

    /// Routes one request.
    pub fn handle(&self, method: &str, url: &str) -> Reply {
        if method != "GET" {
            return Reply::error(405, "method not allowed");
        }
        let (path, query) = url.split_once('?').unwrap_or((url, ""));
        match path {
            "/debug/vars" => Reply::ok("application/json; charset=utf-8", self.vars()),
            "/debug/pprof/" | "/debug/pprof" => Reply::ok("text/html; charset=utf-8", INDEX),
            "/debug/pprof/threads" | "/debug/pprof/goroutine" => {
                Reply::ok("text/plain; charset=utf-8", super::stacks::dump())
            }
            "/debug/pprof/profile" => profile(query),
            _ => match path.strip_prefix("/debug/shims/") {
                Some(rest) => self.shim_log(rest),
                None => Reply::not_found(),
            },
        }
    }

    /// `/debug/shims/<ns>/<id>/log`: the last 64 KiB a task's shim wrote to its log.
    fn shim_log(&self, rest: &str) -> Reply {
        let parts: Vec<&str> = rest.split('/').collect();
        let [ns, id, "log"] = parts.as_slice() else {
            return Reply::not_found();
        };
        let Some(manager) = self
            .plugins
            .value::<crate::runtime::TaskManager>(crate::runtime::RUNTIME_V2, "task")
        else {
            return Reply::not_found();
        };
        match manager.shim_log(ns, id) {
            Some(log) => Reply::ok("text/plain; charset=utf-8", log),
            None => Reply::error(404, format!("task {id} not found in namespace {ns}")),
        }
    }

    fn vars(&self) -> String {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let field = |name: &str| -> u64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
                .unwrap_or(0)
        };
        let cmdline: Vec<String> = std::env::args().map(|a| quote(&a)).collect();
        let mut out = String::from("{\n");
        let _ = writeln!(out, "\"cmdline\": [{}],", cmdline.join(", "));
        let _ = writeln!(
            out,
            "\"memory\": {{\"rss_bytes\": {}, \"peak_rss_bytes\": {}, \"virtual_bytes\": {}}},",
            field("VmRSS:") * 1024,
            field("VmHWM:") * 1024,
            field("VmSize:") * 1024
        );
        let _ = writeln!(out, "\"threads\": {},", field("Threads:"));
        let _ = writeln!(
            out,
            "\"uptime_seconds\": {:.3},",
            self.started.elapsed().as_secs_f64()
        );
        let _ = writeln!(out, "\"plugins\": {},", self.plugins.len());
        let _ = writeln!(out, "\"version\": {}", quote(crate::VERSION));
        out.push('}');
        out.push('\n');
        out
    }
}

fn profile(query: &str) -> Reply {
    let seconds = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("seconds="))
        .map(|v| v.parse::<u64>())
        .unwrap_or(Ok(30));
    let seconds = match seconds {
        Ok(s) if s > 0 => Duration::from_secs(s).min(MAX_PROFILE),
        _ => return Reply::error(400, "seconds must be a positive whole number"),
    };
    match super::profile::cpu_profile(seconds, 100) {
        Ok(bytes) => Reply::ok("application/octet-stream", bytes),
        Err(super::profile::ProfileError::Busy) => {
            Reply::error(409, "another CPU profile is running")
        }
        Err(err) => Reply::error(500, err),
    }
}

const INDEX: &str = "<html><head><title>/debug/pprof/</title></head><body>\n\
<p>ctrd profiles:</p>\n<ul>\n\
<li><a href=\"profile?seconds=30\">profile</a>: CPU profile (pprof format)</li>\n\
<li><a href=\"threads\">threads</a>: every thread by name with its job, then its stack</li>\n\
</ul>\n<p><a href=\"/debug/vars\">/debug/vars</a></p>\n</body></html>\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vars_is_json_with_the_expected_keys() {
        let debug = Debug::new(Instant::now(), Set::new());
        let reply = debug.handle("GET", "/debug/vars");
        assert_eq!(reply.status, 200);
        let text = String::from_utf8(reply.body).expect("utf8");
        for key in [
            "\"cmdline\"",
            "\"memory\"",
            "\"threads\"",
            "\"uptime_seconds\"",
            "\"plugins\": 0",
        ] {
            assert!(text.contains(key), "{key} in {text}");
        }
    }

    #[test]
    fn unknown_paths_are_404_and_bad_seconds_400() {
        let debug = Debug::new(Instant::now(), Set::new());
        assert_eq!(debug.handle("GET", "/nope").status, 404);
        assert_eq!(
            debug.handle("GET", "/debug/pprof/profile?seconds=x").status,
            400
        );
        assert_eq!(debug.handle("POST", "/debug/vars").status, 405);
        assert_eq!(debug.handle("GET", "/debug/pprof/").status, 200);
    }
}
