// jemalloc: 8 KiB buffers that are mostly unused (each connection's read buffer) stay mostly
// non-resident with it, and it fragments less under connection churn than glibc's malloc.
#[cfg(all(target_os = "linux", not(target_env = "msvc")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    fanout::cli::main()
}
