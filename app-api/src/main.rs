//! `velro-api`: parse the configuration, start the API (and the embedded PDP), print where
//! everything is, serve until Ctrl-C or SIGTERM, then shut down in order.

use clap::Parser;
use velro_api::app;
use velro_api::config::ApiConfig;

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn init_tracing(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,tower_http=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

#[expect(
    clippy::print_stdout,
    reason = "the start-up banner is for the person who ran the command"
)]
fn banner(running: &app::Running, demo: bool) {
    let api = format!("http://{}", running.addr);
    println!("velro-api listening on {api}");
    println!("  REST API      {api}/api/v1  (models: {api}/api/v1/models)");
    println!("  docs          {api}/docs/  (OpenAPI: {api}/openapi.json)");
    println!("  health        {api}/health/detailed");
    match (running.pdp_grpc, running.pdp_http) {
        (Some(grpc), Some(http)) => {
            println!(
                "  embedded PDP  grpc://{grpc}  http://{http}  (metrics: http://{http}/metrics, keys: http://{http}/v1/keys)"
            );
        }
        _ => println!("  PDP           remote (PDP_URL)"),
    }
    if demo {
        println!("demo world: sign in as any of");
        for (email, name, _) in velro_api::demo::USERS {
            println!("  {email}  ({name})");
        }
        println!("  password: {}", velro_api::demo::PASSWORD);
        println!(
            "  curl -s {api}/api/v1/auth/login -H 'content-type: application/json' -d '{{\"email\":\"{}\",\"password\":\"{}\"}}'",
            velro_api::demo::USERS[0].0,
            velro_api::demo::PASSWORD
        );
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = ApiConfig::parse();
    init_tracing(&config.log_format);
    let listener = tokio::net::TcpListener::bind(config.addr).await?;
    let demo = config.demo;
    let running = app::start(config, listener).await?;
    if demo && velro_api::demo::seed(&running.state).await? {
        tracing::info!("demo world seeded");
    }
    banner(&running, demo);
    shutdown_signal().await;
    tracing::info!("shutting down");
    running.shutdown().await
}
