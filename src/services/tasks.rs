//! `containerd.services.tasks.v1.Tasks` over the runtime v2 shim manager, and its plugins
//! `io.containerd.service.v1.tasks-service` and `io.containerd.grpc.v1.tasks`.
//!
//! Every call but Create goes to the task's shim; Create reads the container's record
//! (spec, runtime, snapshot). Wait holds no thread: its reply is completed by whichever
//! thread sees the process exit (see `crate::runtime::task`).

use std::collections::HashMap;
use std::sync::Arc;

use crate::api::metric::Metric;
use crate::api::mount::Mount;
use crate::api::shim_task;
use crate::api::task_types::Process;
use crate::api::tasks::*;
use crate::api::{Any, Empty};
use crate::errdefs::{Class, Error};
use crate::filters::Filter;
use crate::plugin::{types, GrpcServices, Instance, Registration};
use crate::rpc::{Call, Reply, RpcResult};
use crate::runtime::{shim, CreateOpts, Exit, Task, TaskManager, RUNTIME_V2};

/// What Create needs of a container.
#[derive(Debug, Clone, Default)]
pub struct ContainerRecord {
    /// The OCI spec's JSON (the `Any` value as the client stored it).
    pub spec: Vec<u8>,
    pub runtime: String,
    pub runtime_options: Option<Any>,
    pub snapshotter: String,
    pub snapshot_key: String,
    pub labels: HashMap<String, String>,
}

/// Finds containers and the mounts of their snapshots.
pub trait ContainerSource: Send + Sync {
    /// The container `id` in `namespace`; NotFound as containerd words it.
    fn container(&self, namespace: &str, id: &str) -> Result<ContainerRecord, Error>;
    /// The mounts of snapshot `key` of `snapshotter`.
    fn mounts(&self, namespace: &str, snapshotter: &str, key: &str) -> Result<Vec<Mount>, Error>;
}

/// The Tasks service.
pub struct TasksService {
    manager: Arc<TaskManager>,
    containers: Arc<dyn ContainerSource>,
}

fn process_from_state(container_id: &str, state: shim_task::StateResponse) -> Process {
    Process {
        container_id: container_id.to_string(),
        id: state.id,
        pid: state.pid,
        status: state.status,
        stdin: state.stdin,
        stdout: state.stdout,
        stderr: state.stderr,
        terminal: state.terminal,
        exit_status: state.exit_status,
        exited_at: state.exited_at,
        ..Default::default()
    }
}

fn exit_timestamp(exit: &Exit) -> protobuf::MessageField<crate::api::Timestamp> {
    Some(crate::api::timestamp(exit.at)).into()
}

impl TasksService {
    pub fn new(manager: Arc<TaskManager>, containers: Arc<dyn ContainerSource>) -> Self {
        TasksService {
            manager,
            containers,
        }
    }

    fn task(&self, call: &Call, id: &str) -> RpcResult<(Arc<Task>, String)> {
        let ns = call.namespace_required()?;
        Ok((self.manager.get(ns, id)?, ns.to_string()))
    }

    fn state(&self, task: &Task, exec_id: &str) -> RpcResult<shim_task::StateResponse> {
        task.client
            .task()
            .state(
                task.client.ctx(Some(self.manager.timeouts().state)),
                &shim_task::StateRequest {
                    id: task.id().to_string(),
                    exec_id: exec_id.to_string(),
                    ..Default::default()
                },
            )
            .map_err(shim::map_error)
    }

    pub fn create(&self, call: &Call, req: CreateTaskRequest) -> RpcResult<CreateTaskResponse> {
        let ns = call.namespace_required()?;
        if req.checkpoint.is_some() {
            return Err(Error::unimplemented(
                "restoring a task from a checkpoint is not supported by ctrd",
            ));
        }
        let container = self.containers.container(ns, &req.container_id)?;
        let rootfs = if req.rootfs.is_empty() && !container.snapshot_key.is_empty() {
            self.containers
                .mounts(ns, &container.snapshotter, &container.snapshot_key)?
        } else {
            req.rootfs.clone()
        };
        let runtime = if req.runtime_path.is_empty() {
            container.runtime.clone()
        } else {
            req.runtime_path.clone()
        };
        let opts = CreateOpts {
            spec: container.spec,
            runtime,
            runtime_options: container.runtime_options,
            task_options: req.options.clone().into_option(),
            rootfs,
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: req.terminal,
            labels: container.labels,
        };
        let task = self.manager.create(ns, &req.container_id, opts)?;
        Ok(CreateTaskResponse {
            container_id: req.container_id,
            pid: task.pid,
            ..Default::default()
        })
    }

    pub fn start(&self, call: &Call, req: StartRequest) -> RpcResult<StartResponse> {
        let (task, _) = self.task(call, &req.container_id)?;
        let resp = task
            .client
            .task()
            .start(
                task.client.ctx(None),
                &shim_task::StartRequest {
                    id: req.container_id.clone(),
                    exec_id: req.exec_id.clone(),
                    ..Default::default()
                },
            )
            .map_err(shim::map_error)?;
        Ok(StartResponse {
            pid: resp.pid,
            ..Default::default()
        })
    }

    pub fn delete(&self, call: &Call, req: DeleteTaskRequest) -> RpcResult<DeleteResponse> {
        let ns = call.namespace_required()?;
        let exit = self.manager.delete(ns, &req.container_id)?;
        Ok(DeleteResponse {
            id: req.container_id,
            pid: exit.pid,
            exit_status: exit.status,
            exited_at: exit_timestamp(&exit),
            ..Default::default()
        })
    }

    pub fn delete_process(
        &self,
        call: &Call,
        req: DeleteProcessRequest,
    ) -> RpcResult<DeleteResponse> {
        let (task, _) = self.task(call, &req.container_id)?;
        if req.exec_id.is_empty() || req.exec_id == req.container_id {
            return Err(Error::invalid_argument(
                "DeleteProcess is for exec processes; delete the task itself with Delete",
            ));
        }
        let resp = task
            .client
            .task()
            .delete(
                task.client.ctx(None),
                &shim_task::DeleteRequest {
                    id: req.container_id.clone(),
                    exec_id: req.exec_id.clone(),
                    ..Default::default()
                },
            )
            .map_err(shim::map_error)?;
        task.forget(&req.exec_id);
        Ok(DeleteResponse {
            id: req.exec_id,
            pid: resp.pid,
            exit_status: resp.exit_status,
            exited_at: resp.exited_at,
            ..Default::default()
        })
    }

    pub fn get(&self, call: &Call, req: GetRequest) -> RpcResult<GetResponse> {
        let (task, _) = self.task(call, &req.container_id)?;
        let state = self.state(&task, &req.exec_id)?;
        Ok(GetResponse {
            process: Some(process_from_state(&req.container_id, state)).into(),
            ..Default::default()
        })
    }

    pub fn list(&self, call: &Call, req: ListTasksRequest) -> RpcResult<ListTasksResponse> {
        let ns = call.namespace_required()?;
        let filter = if req.filter.is_empty() {
            Filter::match_all()
        } else {
            Filter::parse(&req.filter)?
        };
        let mut tasks = Vec::new();
        for task in self.manager.tasks(Some(ns)) {
            let state = match self.state(&task, "") {
                Ok(state) => state,
                Err(err) if matches!(err.class(), Class::NotFound | Class::Unavailable) => continue,
                Err(err) => return Err(err),
            };
            let process = process_from_state(task.id(), state);
            let matched = filter.matches(&|path: &[String]| match path {
                [field] if field == "id" || field == "container_id" => {
                    Some(process.container_id.clone())
                }
                [field] if field == "pid" => Some(process.pid.to_string()),
                [field] if field == "status" => {
                    Some(format!("{:?}", process.status.enum_value_or_default()))
                }
                _ => None,
            });
            if matched {
                tasks.push(process);
            }
        }
        Ok(ListTasksResponse {
            tasks,
            ..Default::default()
        })
    }

    pub fn kill(&self, call: &Call, req: KillRequest) -> RpcResult<Empty> {
        let (task, _) = self.task(call, &req.container_id)?;
        task.client
            .task()
            .kill(
                task.client.ctx(None),
                &shim_task::KillRequest {
                    id: req.container_id.clone(),
                    exec_id: req.exec_id.clone(),
                    signal: req.signal,
                    all: req.all,
                    ..Default::default()
                },
            )
            .map_err(shim::map_error)
    }

    pub fn exec(&self, call: &Call, req: ExecProcessRequest) -> RpcResult<Empty> {
        if req.exec_id.is_empty() {
            return Err(Error::invalid_argument("exec id cannot be empty"));
        }
        crate::identifiers::validate(&req.exec_id).map_err(|err| err.context("invalid exec id"))?;
        let (task, _) = self.task(call, &req.container_id)?;
        task.client
            .task()
            .exec(
                task.client.ctx(None),
                &shim_task::ExecProcessRequest {
                    id: req.container_id.clone(),
                    exec_id: req.exec_id.clone(),
                    terminal: req.terminal,
                    stdin: req.stdin.clone(),
                    stdout: req.stdout.clone(),
                    stderr: req.stderr.clone(),
                    spec: req.spec.clone(),
                    ..Default::default()
                },
            )
            .map_err(shim::map_error)
    }

    pub fn resize_pty(&self, call: &Call, req: ResizePtyRequest) -> RpcResult<Empty> {
        let (task, _) = self.task(call, &req.container_id)?;
        task.client
            .task()
            .resize_pty(
                task.client.ctx(None),
                &shim_task::ResizePtyRequest {
                    id: req.container_id.clone(),
                    exec_id: req.exec_id.clone(),
                    width: req.width,
                    height: req.height,
                    ..Default::default()
                },
            )
            .map_err(shim::map_error)
    }

    pub fn close_io(&self, call: &Call, req: CloseIORequest) -> RpcResult<Empty> {
        let (task, _) = self.task(call, &req.container_id)?;
        task.client
            .task()
            .close_io(
                task.client.ctx(None),
                &shim_task::CloseIORequest {
                    id: req.container_id.clone(),
                    exec_id: req.exec_id.clone(),
                    stdin: req.stdin,
                    ..Default::default()
                },
            )
            .map_err(shim::map_error)
    }

    pub fn pause(&self, call: &Call, req: PauseTaskRequest) -> RpcResult<Empty> {
        let (task, _) = self.task(call, &req.container_id)?;
        task.client
            .task()
            .pause(
                task.client.ctx(None),
                &shim_task::PauseRequest {
                    id: req.container_id.clone(),
                    ..Default::default()
                },
            )
            .map_err(shim::map_error)
    }

    pub fn resume(&self, call: &Call, req: ResumeTaskRequest) -> RpcResult<Empty> {
        let (task, _) = self.task(call, &req.container_id)?;
        task.client
            .task()
            .resume(
                task.client.ctx(None),
                &shim_task::ResumeRequest {
                    id: req.container_id.clone(),
                    ..Default::default()
                },
            )
            .map_err(shim::map_error)
    }

    pub fn list_pids(&self, call: &Call, req: ListPidsRequest) -> RpcResult<ListPidsResponse> {
        let (task, _) = self.task(call, &req.container_id)?;
        let resp = task
            .client
            .task()
            .pids(
                task.client.ctx(None),
                &shim_task::PidsRequest {
                    id: req.container_id.clone(),
                    ..Default::default()
                },
            )
            .map_err(shim::map_error)?;
        Ok(ListPidsResponse {
            processes: resp.processes,
            ..Default::default()
        })
    }

    pub fn checkpoint(
        &self,
        _call: &Call,
        _req: CheckpointTaskRequest,
    ) -> RpcResult<CheckpointTaskResponse> {
        Err(Error::unimplemented(
            "checkpointing tasks is not supported by ctrd",
        ))
    }

    pub fn update(&self, call: &Call, req: UpdateTaskRequest) -> RpcResult<Empty> {
        let (task, _) = self.task(call, &req.container_id)?;
        task.client
            .task()
            .update(
                task.client.ctx(None),
                &shim_task::UpdateTaskRequest {
                    id: req.container_id.clone(),
                    resources: req.resources.clone(),
                    annotations: req.annotations.clone(),
                    ..Default::default()
                },
            )
            .map_err(shim::map_error)
    }

    pub fn metrics(&self, call: &Call, req: MetricsRequest) -> RpcResult<MetricsResponse> {
        let ns = call.namespace_required()?;
        let filter = Filter::parse_all(&req.filters)?;
        let mut metrics = Vec::new();
        for task in self.manager.tasks(Some(ns)) {
            let matched = filter.matches(&|path: &[String]| match path {
                [field] if field == "id" => Some(task.id().to_string()),
                [field] if field == "namespace" => Some(task.namespace().to_string()),
                [field] if field == "runtime" => Some(task.runtime.clone()),
                _ => None,
            });
            if !matched {
                continue;
            }
            let stats = task
                .client
                .task()
                .stats(
                    task.client.ctx(None),
                    &shim_task::StatsRequest {
                        id: task.id().to_string(),
                        ..Default::default()
                    },
                )
                .map_err(shim::map_error);
            match stats {
                Ok(stats) => metrics.push(Metric {
                    timestamp: Some(crate::events::now()).into(),
                    id: task.id().to_string(),
                    data: stats.stats,
                    ..Default::default()
                }),
                Err(err) if err.class() == Class::NotFound => {}
                Err(err) => return Err(err),
            }
        }
        Ok(MetricsResponse {
            metrics,
            ..Default::default()
        })
    }

    /// Wait: answers when the process exits, from the thread that learns of it.
    pub fn wait(&self, req: WaitRequest, reply: Reply<WaitResponse>) {
        let found = reply
            .call()
            .namespace_required()
            .and_then(|ns| self.manager.get(ns, &req.container_id));
        let task = match found {
            Ok(task) => task,
            Err(err) => return reply.finish(Err(err)),
        };
        let exec_id = if req.exec_id.is_empty() {
            req.container_id.clone()
        } else {
            req.exec_id.clone()
        };
        self.manager.wait(
            &task,
            &exec_id,
            Box::new(move |result| {
                reply.finish(result.map(|exit| WaitResponse {
                    exit_status: exit.status,
                    exited_at: exit_timestamp(&exit),
                    ..Default::default()
                }))
            }),
        );
    }
}

/// The gRPC service: the unary runner for every method but Wait, which answers later.
fn service(s: Arc<TasksService>) -> grpcio::Service {
    const NAME: &str = "containerd.services.tasks.v1.Tasks";
    let mut builder = grpcio::ServiceBuilder::new();
    macro_rules! unary {
        ($method:expr, $name:literal, $handler:ident) => {{
            let s = s.clone();
            builder = builder.add_unary_handler(&$method, move |ctx, req, sink| {
                let s = s.clone();
                crate::rpc::unary(ctx, req, sink, NAME, $name, move |call, req| {
                    s.$handler(call, req)
                })
            });
        }};
    }
    unary!(METHOD_TASKS_CREATE, "Create", create);
    unary!(METHOD_TASKS_START, "Start", start);
    unary!(METHOD_TASKS_DELETE, "Delete", delete);
    unary!(METHOD_TASKS_DELETE_PROCESS, "DeleteProcess", delete_process);
    unary!(METHOD_TASKS_GET, "Get", get);
    unary!(METHOD_TASKS_LIST, "List", list);
    unary!(METHOD_TASKS_KILL, "Kill", kill);
    unary!(METHOD_TASKS_EXEC, "Exec", exec);
    unary!(METHOD_TASKS_RESIZE_PTY, "ResizePty", resize_pty);
    unary!(METHOD_TASKS_CLOSE_I_O, "CloseIO", close_io);
    unary!(METHOD_TASKS_PAUSE, "Pause", pause);
    unary!(METHOD_TASKS_RESUME, "Resume", resume);
    unary!(METHOD_TASKS_LIST_PIDS, "ListPids", list_pids);
    unary!(METHOD_TASKS_CHECKPOINT, "Checkpoint", checkpoint);
    unary!(METHOD_TASKS_UPDATE, "Update", update);
    unary!(METHOD_TASKS_METRICS, "Metrics", metrics);
    let wait = s.clone();
    builder = builder.add_unary_handler(&METHOD_TASKS_WAIT, move |ctx, req, sink| {
        let s = wait.clone();
        crate::rpc::unary_deferred(ctx, req, sink, NAME, "Wait", move |req, reply| {
            s.wait(req, reply)
        })
    });
    builder.build()
}

impl GrpcServices for TasksService {
    fn grpc_services(&self) -> Vec<grpcio::Service> {
        vec![service(Arc::new(TasksService {
            manager: self.manager.clone(),
            containers: self.containers.clone(),
        }))]
    }
}

/// `io.containerd.service.v1.tasks-service` and `io.containerd.grpc.v1.tasks`.
pub fn registrations() -> Vec<Registration> {
    vec![
        Registration::new(types::SERVICE, "tasks-service", |ic| {
            let manager = ic.single::<TaskManager>(RUNTIME_V2)?;
            let containers = container_source(ic)?;
            Ok(Instance::new(Arc::new(TasksService::new(
                manager, containers,
            ))))
        })
        .requires(&[RUNTIME_V2, types::METADATA, types::EVENT]),
        Registration::new(types::GRPC, "tasks", |ic| {
            let service = ic
                .plugins()
                .value::<TasksService>(types::SERVICE, "tasks-service")
                .ok_or_else(|| Error::not_found("tasks service not loaded"))?;
            Ok(Instance::new(service.clone()).with_grpc(service))
        })
        .requires(&[types::SERVICE]),
    ]
}

/// The containers the tasks service reads.
fn container_source(ic: &crate::plugin::InitContext) -> Result<Arc<dyn ContainerSource>, Error> {
    let meta = ic.single::<crate::metadata::Metadata>(types::METADATA)?;
    Ok(Arc::new(MetadataContainers { meta }))
}

/// Containers from the metadata store.
struct MetadataContainers {
    meta: Arc<crate::metadata::Metadata>,
}

impl ContainerSource for MetadataContainers {
    fn container(&self, namespace: &str, id: &str) -> Result<ContainerRecord, Error> {
        let rec = self.meta.db.container(namespace, id)?;
        Ok(ContainerRecord {
            spec: rec.spec.map(|spec| spec.value).unwrap_or_default(),
            runtime: rec.runtime.name,
            runtime_options: rec.runtime.options.map(|o| Any {
                type_url: o.type_url,
                value: o.value,
                ..Default::default()
            }),
            snapshotter: rec.snapshotter,
            snapshot_key: rec.snapshot_key,
            labels: rec.labels.into_iter().collect(),
        })
    }

    fn mounts(&self, namespace: &str, snapshotter: &str, key: &str) -> Result<Vec<Mount>, Error> {
        Ok(self
            .meta
            .snapshot_mounts(&crate::scope::Scope::new(namespace), snapshotter, key)?
            .into_iter()
            .map(crate::snapshots::wire::mount_to_api)
            .collect())
    }
}
