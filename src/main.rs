//! `ctrd`: parse the command line, run, print the error chain once, exit 1 on failure
//! (`ctrd check` has its own exit statuses).

fn main() {
    // Blocks up to 4 MiB (a content stream's 1 MiB messages) come from the heap and are
    // reused from one message to the next; 4 MiB may sit free at its top before it shrinks.
    ctrd::sys::tune_allocator(4 << 20, 4 << 20, 1);
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(check) = ctrd::check::requested(&args) {
        std::process::exit(ctrd::check::run(&check));
    }
    if let Err(err) = ctrd::app::run(args) {
        eprintln!("ctrd: {err}");
        std::process::exit(1);
    }
}
