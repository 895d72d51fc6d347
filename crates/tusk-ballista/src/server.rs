//! `tusk sql-scheduler` and `tusk sql-executor`: Ballista's scheduler and executor with tusk's
//! storage and plan codec.

use std::net::SocketAddr;
use std::sync::Arc;

use ballista_core::extension::{
    ballista_aggregate_functions, ballista_scalar_functions, ballista_window_functions,
};
use ballista_core::utils::default_config_producer;
use ballista_executor::executor_process::{ExecutorProcessConfig, start_executor_process};
use ballista_scheduler::cluster::BallistaCluster;
use ballista_scheduler::config::SchedulerConfig;
use ballista_scheduler::scheduler_process::{create_scheduler, start_grpc_service_with_listener};
use ballista_scheduler::scheduler_server::SessionBuilder;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion_proto::protobuf::{LogicalPlanNode, PhysicalPlanNode};
use tusk_storage::Storage;

use crate::codec::TuskCodec;
use crate::stores::TuskStores;
use crate::{Error, Result};

/// How long an executor may stay silent before the scheduler gives its tasks to others (and
/// reruns the stages whose shuffle output it held). Ballista's default is 180 s.
pub const EXECUTOR_TIMEOUT_S: u64 = 20;
/// How often executors report to the scheduler (a third of [`EXECUTOR_TIMEOUT_S`] or less).
pub const HEARTBEAT_S: u64 = 5;

/// What `tusk sql-scheduler` is told.
#[derive(Debug, Clone)]
pub struct SchedulerOptions {
    /// Address to listen on (gRPC, and the `/healthz` route the client's version check reads).
    pub bind: SocketAddr,
    /// Host name executors and clients are told to use for it [default: the bind host].
    pub external_host: Option<String>,
}

fn runtime(what: &str) -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .thread_name(format!("tusk-{what}"))
        // Plans are decoded recursively, one frame chain per plan node: the clickstream
        // pipeline's final query overflowed the default 2 MiB stack in the scheduler.
        .thread_stack_size(64 << 20)
        .enable_all()
        .build()
        .map_err(|e| Error::Server {
            what: what.into(),
            message: format!("starting the runtime: {e}"),
        })
}

fn tusk_runtime_env(
    stores: &Arc<TuskStores>,
    work_dir: Option<&str>,
) -> datafusion::error::Result<Arc<RuntimeEnv>> {
    let mut b = RuntimeEnvBuilder::new().with_object_store_registry(stores.clone());
    if let Some(dir) = work_dir {
        b = b.with_temp_file_path(dir);
    }
    b.build_arc()
}

/// Run a scheduler until the process is stopped. Prints `tusk sql-scheduler listening on
/// ADDR` once it accepts connections.
pub fn run_scheduler(storage: &Storage, opts: &SchedulerOptions) -> Result<()> {
    let stores = Arc::new(TuskStores::new(storage.clone()));
    let rt = runtime("sql-scheduler")?;
    let fail = |message: String| Error::Server {
        what: format!("tusk sql-scheduler on {}", opts.bind),
        message,
    };
    rt.block_on(async {
        let session_builder: SessionBuilder = Arc::new(move |mut config| {
            // Every job, whatever its client sent: Ballista 55.0 re-plans joins that carry
            // DataFusion's dynamic filters and the job then hangs (see client::session).
            let o = &mut config.options_mut().optimizer;
            o.enable_dynamic_filter_pushdown = false;
            o.enable_join_dynamic_filter_pushdown = false;
            o.enable_topk_dynamic_filter_pushdown = false;
            o.enable_aggregate_dynamic_filter_pushdown = false;
            Ok(SessionStateBuilder::new()
                .with_default_features()
                .with_config(config)
                .with_runtime_env(tusk_runtime_env(&stores, None)?)
                .with_optimizer_rules(ballista_core::optimizer::ballista_default_optimizer_rules())
                .with_scalar_functions(ballista_scalar_functions())
                .with_aggregate_functions(ballista_aggregate_functions())
                .with_window_functions(ballista_window_functions())
                .build())
        });
        let listener = tokio::net::TcpListener::bind(opts.bind)
            .await
            .map_err(|e| fail(format!("cannot listen: {e}")))?;
        let bound = listener.local_addr().map_err(|e| fail(e.to_string()))?;
        let config = SchedulerConfig {
            external_host: opts
                .external_host
                .clone()
                .unwrap_or_else(|| bound.ip().to_string()),
            bind_host: bound.ip().to_string(),
            bind_port: bound.port(),
            executor_timeout_seconds: EXECUTOR_TIMEOUT_S,
            expire_dead_executor_interval_seconds: HEARTBEAT_S,
            no_executors_grace_period_seconds: EXECUTOR_TIMEOUT_S,
            override_session_builder: Some(session_builder.clone()),
            override_logical_codec: Some(Arc::new(TuskCodec::default())),
            ..Default::default()
        };
        config.validate().map_err(|e| fail(e.to_string()))?;
        let cluster = BallistaCluster::new_memory(
            config.scheduler_endpoint(),
            session_builder,
            Arc::new(default_config_producer),
        );
        let scheduler =
            create_scheduler::<LogicalPlanNode, PhysicalPlanNode>(cluster, Arc::new(config))
                .await
                .map_err(|e| fail(e.to_string()))?;
        println!(
            "tusk sql-scheduler listening on {bound} (Ballista {}, DataFusion {})",
            crate::BALLISTA_VERSION,
            crate::DATAFUSION_VERSION
        );
        start_grpc_service_with_listener(listener, scheduler)
            .await
            .map_err(|e| fail(e.to_string()))
    })
}

/// What `tusk sql-executor` is told.
#[derive(Debug, Clone)]
pub struct ExecutorOptions {
    /// The scheduler's host.
    pub scheduler_host: String,
    /// The scheduler's port.
    pub scheduler_port: u16,
    /// Host to listen on.
    pub bind_host: String,
    /// Arrow Flight port (shuffle reads and results are fetched here).
    pub port: u16,
    /// gRPC port (the scheduler pushes tasks here).
    pub grpc_port: u16,
    /// Host name others are told to use [default: the bind host].
    pub external_host: Option<String>,
    /// Tasks run at once (0: one per core).
    pub concurrency: usize,
    /// Shuffle files and spills [default: a temporary directory].
    pub work_dir: Option<String>,
}

/// Run an executor until the process is stopped or its scheduler goes away.
pub fn run_executor(storage: &Storage, opts: &ExecutorOptions) -> Result<()> {
    let stores = Arc::new(TuskStores::new(storage.clone()));
    let rt = runtime("sql-executor")?;
    let work_dir = opts.work_dir.clone();
    let producer: ballista_core::RuntimeProducer =
        Arc::new(move |_| tusk_runtime_env(&stores, work_dir.as_deref()));
    let config = ExecutorProcessConfig {
        bind_host: opts.bind_host.clone(),
        external_host: opts.external_host.clone(),
        port: opts.port,
        grpc_port: opts.grpc_port,
        scheduler_host: opts.scheduler_host.clone(),
        scheduler_port: opts.scheduler_port,
        scheduler_connect_timeout_seconds: 30,
        vcores: opts.concurrency,
        work_dir: opts.work_dir.clone(),
        executor_heartbeat_interval_seconds: HEARTBEAT_S,
        override_runtime_producer: Some(producer),
        override_logical_codec: Some(Arc::new(TuskCodec::default())),
        ..Default::default()
    };
    let what = format!(
        "tusk sql-executor on {}:{} (scheduler {}:{})",
        opts.bind_host, opts.port, opts.scheduler_host, opts.scheduler_port
    );
    println!("{what}: starting");
    rt.block_on(start_executor_process(Arc::new(config)))
        .map_err(|e| Error::Server {
            what,
            message: e.to_string(),
        })
}
