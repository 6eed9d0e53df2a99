// A custom metrics API server (custom.metrics.k8s.io) for the e2e tier: the upstream library
// sigs.k8s.io/custom-metrics-apiserver (the one prometheus-adapter is built on) serving through the kube-apiserver's
// aggregation layer, with the library's own test provider, whose per-object values are written over HTTP. It stands
// where prometheus-adapter and Prometheus would: tests write each serving pod's vllm:num_requests_waiting.
// Unlike the library's test-adapter main, the write endpoint listens on --write-address (loopback) only.
package main

import (
	"context"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/emicklei/go-restful/v3"
	"k8s.io/component-base/logs"
	"k8s.io/klog/v2"

	basecmd "sigs.k8s.io/custom-metrics-apiserver/pkg/cmd"
	fakeprovider "sigs.k8s.io/custom-metrics-apiserver/test-adapter/provider"
)

func main() {
	logs.InitLogs()
	defer logs.FlushLogs()

	cmd := &basecmd.AdapterBase{Name: "neuron-operator-test-metrics-adapter"}
	writeAddress := cmd.Flags().String("write-address", "127.0.0.1:0", "where tests POST metric values")
	logs.AddFlags(cmd.Flags())
	if err := cmd.Flags().Parse(os.Args); err != nil {
		klog.Fatalf("unable to parse flags: %v", err)
	}
	client, err := cmd.DynamicClient()
	if err != nil {
		klog.Fatalf("unable to construct dynamic client: %v", err)
	}
	mapper, err := cmd.RESTMapper()
	if err != nil {
		klog.Fatalf("unable to construct discovery REST mapper: %v", err)
	}
	metrics, webService := fakeprovider.NewFakeProvider(client, mapper)
	cmd.WithCustomMetrics(metrics)

	listener, err := net.Listen("tcp", *writeAddress)
	if err != nil {
		klog.Fatalf("unable to listen on %s: %v", *writeAddress, err)
	}
	klog.Infof("write endpoint listening on %s", listener.Addr())
	container := restful.NewContainer()
	container.Add(webService)
	go func() {
		server := &http.Server{Handler: container, ReadHeaderTimeout: 3 * time.Second}
		klog.Fatal(server.Serve(listener))
	}()
	if err := cmd.Run(context.Background()); err != nil {
		klog.Fatalf("unable to run custom metrics adapter: %v", err)
	}
}
