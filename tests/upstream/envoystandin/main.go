// Command envoystandin stands in for Envoy in meshvm's VM-join tests.
//
// Why it exists: Envoy (C++, Bazel) cannot be built on the test machine, and without a proxy
// connected to pilot-agent nothing reaches istiod: no ADS stream, so no auto-registered
// WorkloadEntry and no health reports. pilot-agent launches this program as it launches Envoy
// (proxyConfig.binaryPath, `-c ./etc/istio/proxy/envoy-rev.json ...`), and it talks to the
// agent exactly as Envoy does, and nothing more:
//   - reads the bootstrap the agent wrote (node id, cluster, metadata; the xds-grpc and
//     sds-grpc pipe paths; the admin port);
//   - subscribes over the agent's SDS socket to the workload certificate ("default") and the
//     root ("ROOTCA"), logs each version it gets (rotations too) and ACKs it;
//   - opens ADS over the agent's xDS socket with that node, asks for clusters and listeners
//     (the listener request is what makes the agent start its health reports), ACKs every
//     response and keeps the stream open, so istiod sees a connected proxy;
//   - answers the agent's readiness probe on the admin port (/stats) as a live Envoy does.
//
// A stream that fails is opened again after a backoff, as Envoy retries its xDS and SDS
// streams (Envoy backs off up to 30 s; here up to 5 s, to keep the tests short), so a proxy
// istiod refuses keeps trying and the agent keeps logging why. It exits when the agent
// signals it.
package main

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tls "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/structpb"
)

const (
	secretType   = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
	clusterType  = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
	listenerType = "type.googleapis.com/envoy.config.listener.v3.Listener"
)

// bootstrap is the part of Envoy's bootstrap JSON the stand-in reads.
type bootstrap struct {
	Node struct {
		ID       string         `json:"id"`
		Cluster  string         `json:"cluster"`
		Metadata map[string]any `json:"metadata"`
	} `json:"node"`
	Admin struct {
		Address struct {
			SocketAddress struct {
				PortValue int `json:"port_value"`
			} `json:"socket_address"`
		} `json:"address"`
	} `json:"admin"`
	StaticResources struct {
		Clusters []json.RawMessage `json:"clusters"`
	} `json:"static_resources"`
}

// pipePath finds the unix socket path of the static cluster `name`.
func (b *bootstrap) pipePath(name string) string {
	for _, raw := range b.StaticResources.Clusters {
		var c struct {
			Name           string `json:"name"`
			LoadAssignment struct {
				Endpoints []struct {
					LbEndpoints []struct {
						Endpoint struct {
							Address struct {
								Pipe struct {
									Path string `json:"path"`
								} `json:"pipe"`
							} `json:"address"`
						} `json:"endpoint"`
					} `json:"lb_endpoints"`
				} `json:"endpoints"`
			} `json:"load_assignment"`
		}
		if json.Unmarshal(raw, &c) != nil || c.Name != name {
			continue
		}
		for _, e := range c.LoadAssignment.Endpoints {
			for _, lb := range e.LbEndpoints {
				if p := lb.Endpoint.Address.Pipe.Path; p != "" {
					return p
				}
			}
		}
	}
	return ""
}

func main() {
	log.SetPrefix("envoy-standin: ")
	log.SetFlags(0)
	// Envoy's command line as pilot-agent writes it; only -c matters, the rest is accepted.
	fs := flag.NewFlagSet("envoy", flag.ContinueOnError)
	config := fs.String("c", "", "bootstrap file")
	fs.String("l", "", "")
	fs.String("log-format", "", "")
	fs.String("drain-time-s", "", "")
	fs.String("drain-strategy", "", "")
	fs.String("local-address-ip-version", "", "")
	fs.String("file-flush-interval-msec", "", "")
	fs.String("concurrency", "", "")
	fs.String("component-log-level", "", "")
	fs.String("config-yaml", "", "")
	fs.String("parent-shutdown-time-s", "", "")
	fs.String("restart-epoch", "", "")
	fs.Bool("disable-hot-restart", false, "")
	fs.Bool("allow-unknown-static-fields", false, "")
	fs.Bool("skip-deprecated-logs", false, "")
	if err := fs.Parse(os.Args[1:]); err != nil || *config == "" {
		log.Fatalf("usage: envoy -c BOOTSTRAP ... (%v)", err)
	}
	text, err := os.ReadFile(*config)
	if err != nil {
		log.Fatalf("reading the bootstrap: %v", err)
	}
	var boot bootstrap
	if err := json.Unmarshal(text, &boot); err != nil {
		log.Fatalf("parsing the bootstrap %s: %v", *config, err)
	}
	metadata, err := structpb.NewStruct(boot.Node.Metadata)
	if err != nil {
		log.Fatalf("node metadata: %v", err)
	}
	node := &core.Node{Id: boot.Node.ID, Cluster: boot.Node.Cluster, Metadata: metadata}
	log.Printf("node %s", node.Id)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	admin(boot.Admin.Address.SocketAddress.PortValue)

	sds := dial(boot.pipePath("sds-grpc"))
	xds := dial(boot.pipePath("xds-grpc"))
	for _, name := range []string{"default", "ROOTCA"} {
		go retry(ctx, func() error { return secret(ctx, sds, node, name) })
	}
	go retry(ctx, func() error { return ads(ctx, xds, node) })
	<-ctx.Done()
	log.Printf("stopping")
}

// retry runs a stream until the context ends, opening it again after each failure with a
// doubling backoff (0.5 s to 5 s).
func retry(ctx context.Context, stream func() error) {
	backoff := 500 * time.Millisecond
	for {
		err := stream()
		if ctx.Err() != nil {
			return
		}
		log.Printf("%v; retrying in %s", err, backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

func dial(path string) *grpc.ClientConn {
	if path == "" {
		log.Fatalf("the bootstrap names no pipe for xds-grpc or sds-grpc")
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		log.Fatalf("%s: %v", path, err)
	}
	conn, err := grpc.NewClient("unix://"+abs, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		log.Fatalf("dialing %s: %v", abs, err)
	}
	return conn
}

// admin answers pilot-agent's readiness probe as a live Envoy with its first CDS and LDS
// updates applied, and its drain request.
func admin(port int) {
	if port == 0 {
		port = 15000
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/stats", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, "cluster_manager.cds.update_success: 1\nlistener_manager.lds.update_success: 1\n"+
			"server.state: 0\nlistener_manager.workers_started: 1\n")
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "OK") })
	listener, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		log.Fatalf("admin port: %v", err)
	}
	go func() { _ = http.Serve(listener, mux) }()
}

// secret subscribes to one secret ("default": the workload certificate, "ROOTCA": the root)
// over SDS, logs each version the agent sends (the first, then each rotation) and ACKs it, as
// Envoy's SDS subscription does; it returns when the stream ends.
func secret(ctx context.Context, conn *grpc.ClientConn, node *core.Node, name string) error {
	stream, err := secretv3.NewSecretDiscoveryServiceClient(conn).StreamSecrets(ctx)
	if err != nil {
		return fmt.Errorf("SDS %s: %w", name, err)
	}
	req := &discovery.DiscoveryRequest{Node: node, TypeUrl: secretType, ResourceNames: []string{name}}
	for {
		if err := stream.Send(req); err != nil {
			return fmt.Errorf("SDS request %s: %w", name, err)
		}
		resp, err := stream.Recv()
		if err != nil {
			return fmt.Errorf("SDS %s: %w", name, err)
		}
		for _, res := range resp.Resources {
			var s tls.Secret
			if err := res.UnmarshalTo(&s); err != nil {
				return fmt.Errorf("SDS %s: %w", name, err)
			}
			describe(&s)
		}
		req = &discovery.DiscoveryRequest{TypeUrl: secretType, ResourceNames: []string{name},
			VersionInfo: resp.VersionInfo, ResponseNonce: resp.Nonce}
	}
}

func describe(s *tls.Secret) {
	var chain []byte
	switch {
	case s.GetTlsCertificate() != nil:
		chain = s.GetTlsCertificate().GetCertificateChain().GetInlineBytes()
	case s.GetValidationContext() != nil:
		chain = s.GetValidationContext().GetTrustedCa().GetInlineBytes()
	}
	block, _ := pem.Decode(chain)
	if block == nil {
		log.Printf("SDS secret %s: no certificate", s.Name)
		return
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		log.Printf("SDS secret %s: %v", s.Name, err)
		return
	}
	uris := make([]string, 0, len(cert.URIs))
	for _, u := range cert.URIs {
		uris = append(uris, u.String())
	}
	log.Printf("SDS secret %s: URI SANs [%s], subject %q, expires %s", s.Name, strings.Join(uris, " "),
		cert.Subject.String(), cert.NotAfter.UTC().Format("2006-01-02T15:04:05Z"))
}

// ads opens the aggregated stream with the node, asks for clusters and listeners, ACKs each
// response, and keeps the stream open until the context ends.
func ads(ctx context.Context, conn *grpc.ClientConn, node *core.Node) error {
	stream, err := discovery.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		return fmt.Errorf("ADS: %w", err)
	}
	for i, typ := range []string{clusterType, listenerType} {
		req := &discovery.DiscoveryRequest{TypeUrl: typ}
		if i == 0 {
			req.Node = node
		}
		if err := stream.Send(req); err != nil {
			return fmt.Errorf("ADS request %s: %w", typ, err)
		}
	}
	log.Printf("ADS stream open")
	for {
		resp, err := stream.Recv()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("ADS: %w", err)
		}
		log.Printf("ADS %s version %s: %d resources", resp.TypeUrl, resp.VersionInfo, len(resp.Resources))
		ack := &discovery.DiscoveryRequest{TypeUrl: resp.TypeUrl, VersionInfo: resp.VersionInfo, ResponseNonce: resp.Nonce}
		if err := stream.Send(ack); err != nil {
			return fmt.Errorf("ADS ACK: %w", err)
		}
	}
}
