//! `ctrd`: parse the command line, run, print the error chain once, exit 1 on failure
//! (`ctrd check` has its own exit statuses).

fn main() {
    ctrd::sys::tune_allocator(128 * 1024, 1);
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(check) = ctrd::check::requested(&args) {
        std::process::exit(ctrd::check::run(&check));
    }
    if let Err(err) = ctrd::app::run(args) {
        eprintln!("ctrd: {err}");
        std::process::exit(1);
    }
}
