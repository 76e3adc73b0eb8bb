// gRPC core (1.56), started once per process with only the threads a ctrd server uses.
//
// Called through src/sys.rs (start_grpc_core) before the first grpcio environment. Two
// threads that gRPC core starts by default never do any work in ctrd:
//
// - The default EventEngine's poller. It waits for I/O on EventEngine endpoints and
//   listeners, which gRPC 1.56 uses only under its event_engine_client, _listener and _dns
//   experiments (GRPC_EXPERIMENTS); every socket of ctrd goes through iomgr's poller, run by
//   the completion-queue threads. While those experiments are off, the default engine is
//   built without a poller thread, over `NoIo`, which aborts with a message if anything
//   asks it for I/O. The engine's timers (HTTP/2 keepalive and ping timers) and its thread
//   pool are unchanged. With any of those experiments on, the stock engine is kept.
// - The resolver executor. Client channels resolve names with c-ares by default, polled
//   through iomgr, and TCP listeners bind with a blocking look-up: neither uses it. Only
//   gRPC's native resolver (GRPC_DNS_RESOLVER=native) queues look-ups there; they then run
//   on the thread that started them.
//
// gRPC core's configuration is also ctrd's own (BuildCoreConfiguration below): it leaves out
// the xDS, RBAC, RLS, grpclb and weighted-round-robin policies and filters, which only
// a client of a service mesh or of Google's load balancers asks for.
//
// Both changes are made only by the process's first start of gRPC core: switching an
// executor off while core is in use is not safe, so if core is already running it is left
// as it is.
//
// The build compiles this file against grpcio-sys's own copy of gRPC and abseil, with the
// same compiler, so the classes used here match the linked library.

#include <grpc/grpc.h>
#include <stdio.h>
#include <stdlib.h>

#include <memory>
#include <string>

#include "src/core/lib/config/core_configuration.h"
#include "src/core/lib/event_engine/default_event_engine.h"
#include "src/core/lib/event_engine/posix_engine/event_poller.h"
#include "src/core/lib/event_engine/posix_engine/posix_engine.h"
#include "src/core/lib/experiments/experiments.h"
#include "src/core/lib/iomgr/executor.h"
#include "src/core/lib/surface/builtins.h"
#include "src/core/lib/transport/http_connect_handshaker.h"
#include "src/core/lib/transport/tcp_connect_handshaker.h"

namespace grpc_event_engine {
namespace experimental {
void RegisterEventEngineChannelArgPreconditioning(
    grpc_core::CoreConfiguration::Builder* builder);
}  // namespace experimental
}  // namespace grpc_event_engine

// What gRPC core registers when it first builds its configuration. gRPC core declares this
// function and defines it in its plugin registry; this definition, linked in with
// ctrd_grpc_core_start, stands in for that one, so the linker never pulls the registry, nor
// what only the registry reaches: the xDS resolver, client and policies with their Envoy
// messages, the RBAC, fault-injection and stateful-session filters (and re2, which their
// matchers use), RLS, grpclb, and the priority, weighted-target, outlier-detection and
// weighted-round-robin policies. A ctrd server answers on unix and TCP sockets with or without
// TLS; its only client channels are the proxy plugins', to an address given in the config,
// resolved by the DNS or socket-address resolvers and balanced by pick_first (gRPC's
// default) or round_robin. What stays is registered in gRPC's own order: filters at the
// same stage run in the order they were registered.
namespace grpc_core {
void BuildClientChannelConfiguration(CoreConfiguration::Builder* builder);
void SecurityRegisterHandshakerFactories(CoreConfiguration::Builder* builder);
void RegisterClientAuthorityFilter(CoreConfiguration::Builder* builder);
void RegisterChannelIdleFilters(CoreConfiguration::Builder* builder);
void RegisterDeadlineFilter(CoreConfiguration::Builder* builder);
void RegisterHttpFilters(CoreConfiguration::Builder* builder);
void RegisterMessageSizeFilter(CoreConfiguration::Builder* builder);
void RegisterSecurityFilters(CoreConfiguration::Builder* builder);
void RegisterServiceConfigChannelArgFilter(CoreConfiguration::Builder* builder);
void RegisterResourceQuota(CoreConfiguration::Builder* builder);
void RegisterDnsResolver(CoreConfiguration::Builder* builder);
void RegisterSockaddrResolver(CoreConfiguration::Builder* builder);
void RegisterPickFirstLbPolicy(CoreConfiguration::Builder* builder);
void RegisterRoundRobinLbPolicy(CoreConfiguration::Builder* builder);
void RegisterHttpProxyMapper(CoreConfiguration::Builder* builder);

void BuildCoreConfiguration(CoreConfiguration::Builder* builder) {
  grpc_event_engine::experimental::RegisterEventEngineChannelArgPreconditioning(
      builder);
  // Client connections: CONNECT through an HTTP proxy (http_proxy), then TCP.
  RegisterHttpConnectHandshaker(builder);
  RegisterTCPConnectHandshaker(builder);
  RegisterPickFirstLbPolicy(builder);
  RegisterRoundRobinLbPolicy(builder);
  BuildClientChannelConfiguration(builder);
  SecurityRegisterHandshakerFactories(builder);
  RegisterClientAuthorityFilter(builder);
  RegisterChannelIdleFilters(builder);
  RegisterHttpFilters(builder);
  RegisterDeadlineFilter(builder);
  RegisterMessageSizeFilter(builder);
  RegisterServiceConfigChannelArgFilter(builder);
  RegisterResourceQuota(builder);
  RegisterDnsResolver(builder);
  RegisterSockaddrResolver(builder);
  RegisterHttpProxyMapper(builder);
  RegisterSecurityFilters(builder);
  RegisterBuiltins(builder);
}
}  // namespace grpc_core

namespace {

namespace ee = grpc_event_engine::experimental;

// The poller of an EventEngine that does no I/O of its own: nothing registers a file
// descriptor with it while the EventEngine I/O experiments are off, and nothing runs it.
class NoIo final : public ee::PosixEventPoller {
 public:
  ee::EventHandle* CreateHandle(int fd, absl::string_view name,
                                bool /*track_err*/) override {
    fprintf(stderr,
            "ctrd: gRPC core asked the event engine to poll fd %d (%.*s), but it "
            "runs without a poller; unset GRPC_EXPERIMENTS\n",
            fd, static_cast<int>(name.size()), name.data());
    abort();
  }
  bool CanTrackErrors() const override { return false; }
  std::string Name() override { return "none"; }
  WorkResult Work(ee::EventEngine::Duration /*timeout*/,
                  absl::FunctionRef<void()> /*schedule_poll_again*/) override {
    return WorkResult::kDeadlineExceeded;
  }
  void Kick() override {}
  void Shutdown() override {}
};

bool engine_io_experiments() {
  return grpc_core::IsEventEngineClientEnabled() ||
         grpc_core::IsEventEngineListenerEnabled() ||
         grpc_core::IsEventEngineDnsEnabled();
}

}  // namespace

// Returns 1 if gRPC core now runs without the resolver executor and the default
// EventEngine without a poller thread; 0 if the experiments keep the stock engine (the
// resolver executor is still off); 2 if core was already running and is left as it was.
// gRPC core stays initialised for the rest of the process.
extern "C" int ctrd_grpc_core_start(void) {
  if (grpc_is_initialized()) {
    grpc_init();
    return 2;
  }
  int lean = engine_io_experiments() ? 0 : 1;
  if (lean) {
    ee::SetEventEngineFactory([]() -> std::unique_ptr<ee::EventEngine> {
      // gRPC keeps the default engine while something holds it and builds another when
      // asked after that; every engine shares this poller, which none of them shuts down
      // (it is not theirs) and which has no state.
      static NoIo* no_io = new NoIo();
      return std::make_unique<ee::PosixEventEngine>(no_io);
    });
  }
  grpc_init();
  // Nothing has used either executor yet: stop both, start the default one again.
  grpc_core::Executor::SetThreadingAll(false);
  grpc_core::Executor::SetThreadingDefault(true);
  return lean;
}
