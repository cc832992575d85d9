//! The `dockgate` binary: parse the command line, set up logging, run a subcommand, and map
//! failures to exit codes (2: the input is wrong, 1: anything else).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use dockgate::cli::{Cli, Command, DoctorArgs, GenerateCaArgs, IssueCertArgs, ServeArgs};
use dockgate::config::{Config, Defaults, Overrides, Tls};
use dockgate::{logging, tls, ServeError};

// Measured with bench/ (10k idle TLS connections): glibc malloc keeps ~29 KiB per connection,
// mimalloc ~42 KiB, jemalloc ~21 KiB; jemalloc also made full handshakes cheaper.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.log_format);
    let result = match cli.command {
        None => serve(cli.serve),
        Some(Command::Serve(args)) => serve(args),
        Some(Command::GenerateCa(args)) => generate_ca(args),
        Some(Command::IssueCert(args)) => issue_cert(args),
        Some(Command::CheckConfig(args)) => check_config(args.config),
        Some(Command::Doctor(args)) => doctor(args),
        Some(Command::ImportNginx(args)) => dockgate::cmd::import_nginx::run(&args.file)
            .map(|toml| print!("{toml}"))
            .map_err(Failure::input),
    };
    logging::flush();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure { message, code }) => {
            eprintln!("dockgate: {message}");
            ExitCode::from(code)
        }
    }
}

struct Failure {
    message: String,
    code: u8,
}

impl Failure {
    fn input(e: impl std::fmt::Display) -> Failure {
        Failure {
            message: e.to_string(),
            code: 2,
        }
    }
    fn runtime(e: impl std::fmt::Display) -> Failure {
        Failure {
            message: e.to_string(),
            code: 1,
        }
    }
}

fn load(path: Option<PathBuf>, overrides: &Overrides) -> Result<Config, Failure> {
    let mut config = Config::load(path.as_deref()).map_err(Failure::input)?;
    config.apply(overrides).map_err(Failure::input)?;
    Ok(config)
}

fn serve(args: ServeArgs) -> Result<(), Failure> {
    let overrides = args.overrides();
    let config = load(args.config.clone(), &overrides)?;
    // 10k idle keep-alive connections need more descriptors than the usual soft limit of 1024.
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        tracing::warn!(error = %e, "cannot raise the open-file limit");
    }
    // Return freed pages to the OS after a burst even when no further allocation happens.
    let _ = tikv_jemalloc_ctl::background_thread::write(true);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_park(logging::flush_when_idle)
        .build()
        .map_err(Failure::runtime)?;
    runtime
        .block_on(dockgate::serve(config, overrides, shutdown_signal()))
        .map_err(|e| match e {
            ServeError::Tls(e) => Failure::input(e),
            e @ ServeError::Bind { .. } => Failure::runtime(e),
        })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM; stop with SIGINT");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
}

fn generate_ca(args: GenerateCaArgs) -> Result<(), Failure> {
    let config = load(
        args.config.clone(),
        &Overrides {
            hostnames: args.hostname.clone(),
            ..Default::default()
        },
    )?;
    let dir = args.out.clone().unwrap_or_else(|| match &config.tls {
        Tls::Minted { dir, .. } => dir.clone(),
        Tls::Files { .. } => PathBuf::from(Defaults::CERTS_DIR),
    });
    let opts = tls::CaOptions {
        name: args.name,
        days: args.days,
        permit: args.permit,
    };
    tls::generate_ca(&dir, &opts, args.force).map_err(Failure::input)?;
    let ca = dir.join("ca.crt");
    println!(
        "Wrote {} and {} (private, mode 0600).",
        ca.display(),
        dir.join("ca.key").display()
    );
    println!();
    print!("{}", tls::ca_install_hints(&ca, &config.public_addresses()));
    Ok(())
}

fn issue_cert(args: IssueCertArgs) -> Result<(), Failure> {
    let out = args.out.unwrap_or_else(|| args.ca.clone());
    tls::issue_cert(&args.ca, &args.hostname, &out, args.days).map_err(Failure::input)?;
    println!(
        "Wrote {} (certificate and CA chain) and {} (private, mode 0600) for: {}",
        out.join("server.crt").display(),
        out.join("server.key").display(),
        args.hostname.join(", ")
    );
    Ok(())
}

fn check_config(path: Option<PathBuf>) -> Result<(), Failure> {
    let config = load(path, &Overrides::default())?;
    match &config.source {
        Some(p) => println!("# {}: OK. The effective configuration:", p.display()),
        None => println!("# No config file: the built-in defaults:"),
    }
    print!("{}", config.to_toml());
    Ok(())
}

fn doctor(args: DoctorArgs) -> Result<(), Failure> {
    let config = load(args.config.clone(), &args.upstreams.overrides())?;
    if dockgate::cmd::doctor::run(&config, args.image.as_deref()) {
        Ok(())
    } else {
        Err(Failure {
            message: "some checks failed (see above)".into(),
            code: 1,
        })
    }
}
