package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"go.yaml.in/yaml/v3"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	kjson "sigs.k8s.io/json"

	"github.com/infergate/infergate/gateway"
	"github.com/infergate/infergate/retrain/engine/enginetest"
	"github.com/infergate/infergate/retrain/outbox"
	"github.com/infergate/infergate/retrain/pipeline"
	"github.com/infergate/infergate/runtime"
)

// manifestDir holds the Kubernetes manifests, relative to this package.
const manifestDir = "../../configs/kubernetes"

// manifestKinds makes the typed object of each apiVersion and kind the
// manifests may hold; any other is refused.
var manifestKinds = map[string]func() any{
	"v1/ConfigMap":                           func() any { return &corev1.ConfigMap{} },
	"v1/Secret":                              func() any { return &corev1.Secret{} },
	"v1/Service":                             func() any { return &corev1.Service{} },
	"apps/v1/Deployment":                     func() any { return &appsv1.Deployment{} },
	"apps/v1/StatefulSet":                    func() any { return &appsv1.StatefulSet{} },
	"policy/v1/PodDisruptionBudget":          func() any { return &policyv1.PodDisruptionBudget{} },
	"autoscaling/v2/HorizontalPodAutoscaler": func() any { return &autoscalingv2.HorizontalPodAutoscaler{} },
}

// decodeManifests decodes every YAML document of data strictly into the
// Kubernetes API type its apiVersion and kind name: YAML becomes JSON, which
// the API server's own decoder (sigs.k8s.io/json) decodes refusing unknown
// and duplicate fields, as `kubectl apply --validate=strict` does.
// encoding/json would not do: it matches field names regardless of case,
// so readOnlyRootFileSystem would pass for readOnlyRootFilesystem, and the
// API server, which does not, would drop it.
func decodeManifests(data []byte) ([]any, error) {
	var objs []any
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for i := 1; ; i++ {
		var tree any
		if err := dec.Decode(&tree); errors.Is(err, io.EOF) {
			return objs, nil
		} else if err != nil {
			return nil, fmt.Errorf("cannot parse document %d: %w", i, err)
		}
		if tree == nil {
			continue // an empty document: `---` at the end
		}
		doc, err := json.Marshal(tree)
		if err != nil {
			return nil, fmt.Errorf("cannot convert document %d to JSON: %w", i, err)
		}
		var tm metav1.TypeMeta
		if err := json.Unmarshal(doc, &tm); err != nil {
			return nil, fmt.Errorf("cannot read document %d's apiVersion and kind: %w", i, err)
		}
		newObj := manifestKinds[tm.APIVersion+"/"+tm.Kind]
		if newObj == nil {
			return nil, fmt.Errorf("document %d: apiVersion %q kind %q is none this test knows", i, tm.APIVersion, tm.Kind)
		}
		obj := newObj()
		strictErrs, err := kjson.UnmarshalStrict(doc, obj)
		if err == nil {
			err = errors.Join(strictErrs...)
		}
		if err != nil {
			return nil, fmt.Errorf("cannot decode document %d as %s: %w", i, tm.Kind, err)
		}
		objs = append(objs, obj)
	}
}

// manifests are the decoded objects of configs/kubernetes by kind and name.
type manifests struct {
	configMaps   map[string]*corev1.ConfigMap
	secrets      map[string]*corev1.Secret
	services     map[string]*corev1.Service
	deployments  map[string]*appsv1.Deployment
	statefulSets map[string]*appsv1.StatefulSet
	pdbs         map[string]*policyv1.PodDisruptionBudget
	hpas         map[string]*autoscalingv2.HorizontalPodAutoscaler
}

// loadManifests decodes every .yaml file of manifestDir, refusing a
// namespace (the manifests go into whichever kubectl is pointed at) and a
// name used twice for one kind.
func loadManifests(t *testing.T) *manifests {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(manifestDir, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests in %s: %v", manifestDir, err)
	}
	m := &manifests{
		configMaps: map[string]*corev1.ConfigMap{}, secrets: map[string]*corev1.Secret{},
		services: map[string]*corev1.Service{}, deployments: map[string]*appsv1.Deployment{},
		statefulSets: map[string]*appsv1.StatefulSet{}, pdbs: map[string]*policyv1.PodDisruptionBudget{},
		hpas: map[string]*autoscalingv2.HorizontalPodAutoscaler{},
	}
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		objs, err := decodeManifests(data)
		if err != nil {
			t.Fatalf("%s: %v", filepath.Base(file), err)
		}
		if len(objs) == 0 {
			t.Fatalf("%s holds no object", filepath.Base(file))
		}
		for _, obj := range objs {
			meta := obj.(metav1.ObjectMetaAccessor).GetObjectMeta()
			where := fmt.Sprintf("%s: %T %q", filepath.Base(file), obj, meta.GetName())
			if meta.GetNamespace() != "" {
				t.Errorf("%s names namespace %q; the manifests must go into any", where, meta.GetNamespace())
			}
			if meta.GetName() == "" {
				t.Errorf("%s has no name", where)
			}
			var fresh bool
			switch o := obj.(type) {
			case *corev1.ConfigMap:
				fresh = put(m.configMaps, o.Name, o)
			case *corev1.Secret:
				fresh = put(m.secrets, o.Name, o)
			case *corev1.Service:
				fresh = put(m.services, o.Name, o)
			case *appsv1.Deployment:
				fresh = put(m.deployments, o.Name, o)
			case *appsv1.StatefulSet:
				fresh = put(m.statefulSets, o.Name, o)
			case *policyv1.PodDisruptionBudget:
				fresh = put(m.pdbs, o.Name, o)
			case *autoscalingv2.HorizontalPodAutoscaler:
				fresh = put(m.hpas, o.Name, o)
			}
			if !fresh {
				t.Errorf("%s: the name is used twice", where)
			}
		}
	}
	return m
}

// put adds v to m under name unless name is taken, and says whether it was not.
func put[T any](m map[string]T, name string, v T) bool {
	if _, ok := m[name]; ok {
		return false
	}
	m[name] = v
	return true
}

// workload is a Deployment's or a StatefulSet's pod template, by name.
type workload struct {
	name     string
	selector *metav1.LabelSelector
	pod      *corev1.PodTemplateSpec
}

// workloads returns every Deployment and StatefulSet of m.
func (m *manifests) workloads() []workload {
	var ws []workload
	for name, d := range m.deployments {
		ws = append(ws, workload{"Deployment " + name, d.Spec.Selector, &d.Spec.Template})
	}
	for name, s := range m.statefulSets {
		ws = append(ws, workload{"StatefulSet " + name, s.Spec.Selector, &s.Spec.Template})
	}
	return ws
}

// deploymentRunning returns the Deployment whose one container runs the
// infergate command cmd (its first argument), and that container.
func (m *manifests) deploymentRunning(t *testing.T, cmd string) (*appsv1.Deployment, *corev1.Container) {
	t.Helper()
	for _, d := range m.deployments {
		cs := d.Spec.Template.Spec.Containers
		if len(cs) == 1 && len(cs[0].Args) > 0 && cs[0].Args[0] == cmd {
			return d, &cs[0]
		}
	}
	t.Fatalf("no Deployment runs `infergate %s`", cmd)
	return nil, nil
}

// mountedConfig returns the file that the container's --config flag names,
// from the ConfigMap mounted as the flag's folder, and that folder.
func (m *manifests) mountedConfig(t *testing.T, pod *corev1.PodSpec, c *corev1.Container) (data []byte, dir string) {
	t.Helper()
	i := slices.Index(c.Args, "--config")
	if i < 0 || i+1 == len(c.Args) {
		t.Fatalf("container %s: no --config in %q", c.Name, c.Args)
	}
	file := c.Args[i+1]
	dir = path.Dir(file)
	for _, vm := range c.VolumeMounts {
		if vm.MountPath != dir {
			continue
		}
		// A subPath mount is never updated: the ConfigMap must be the folder,
		// whose ..data link kubelet swaps.
		if vm.SubPath != "" || vm.SubPathExpr != "" {
			t.Fatalf("container %s mounts %s with a subPath, which kubelet does not update", c.Name, dir)
		}
		for _, v := range pod.Volumes {
			if v.Name != vm.Name || v.ConfigMap == nil {
				continue
			}
			cm := m.configMaps[v.ConfigMap.Name]
			if cm == nil {
				t.Fatalf("container %s mounts ConfigMap %q, which no manifest holds", c.Name, v.ConfigMap.Name)
			}
			text, ok := cm.Data[path.Base(file)]
			if !ok {
				t.Fatalf("ConfigMap %s has no key %q for %s", cm.Name, path.Base(file), file)
			}
			return []byte(text), dir
		}
	}
	t.Fatalf("container %s: no ConfigMap volume is mounted at %s", c.Name, dir)
	return nil, ""
}

// secretEnv returns the container's variables that come from a Secret,
// each with its reference, and sets each in the test's environment to the
// value the Secret's manifest holds, as the pod would see it.
func (m *manifests) secretEnv(t *testing.T, c *corev1.Container) map[string]corev1.SecretKeySelector {
	t.Helper()
	refs := map[string]corev1.SecretKeySelector{}
	for _, e := range c.Env {
		if e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil {
			continue
		}
		ref := *e.ValueFrom.SecretKeyRef
		s := m.secrets[ref.Name]
		if s == nil {
			t.Fatalf("container %s: %s comes from Secret %q, which no manifest holds", c.Name, e.Name, ref.Name)
		}
		value, ok := s.StringData[ref.Key]
		if !ok {
			b, ok := s.Data[ref.Key]
			if !ok {
				t.Fatalf("container %s: %s comes from key %q of Secret %s, which has none", c.Name, e.Name, ref.Key, ref.Name)
			}
			value = string(b)
		}
		t.Setenv(e.Name, value)
		refs[e.Name] = ref
	}
	return refs
}

// configEnvNames returns the environment variables a config file names,
// each with its key's path: the values of every key `env` (auth.keys) or
// ending in `_env`.
func configEnvNames(t *testing.T, data []byte) map[string]string {
	t.Helper()
	var tree any
	if err := yaml.Unmarshal(data, &tree); err != nil {
		t.Fatal(err)
	}
	names := map[string]string{}
	var walk func(key string, v any)
	walk = func(key string, v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, sub := range v {
				walk(strings.TrimPrefix(key+"."+k, "."), sub)
			}
		case []any:
			for i, sub := range v {
				walk(fmt.Sprintf("%s[%d]", key, i), sub)
			}
		case string:
			if k := key[strings.LastIndex(key, ".")+1:]; k == "env" || strings.HasSuffix(k, "_env") {
				names[v] = key
			}
		}
	}
	walk("", tree)
	return names
}

// containerPort returns the port a probe or a Service's targetPort names,
// by number or by the container port's name.
func containerPort(t *testing.T, c *corev1.Container, port intstr.IntOrString) int32 {
	t.Helper()
	if port.Type == intstr.Int {
		return port.IntVal
	}
	for _, p := range c.Ports {
		if p.Name == port.StrVal {
			return p.ContainerPort
		}
	}
	t.Fatalf("container %s has no port named %q", c.Name, port.StrVal)
	return 0
}

// listenPort returns the port of a listen address, which must be every
// interface's: in a container the default 127.0.0.1 is unreachable.
func listenPort(t *testing.T, what, listen string) int32 {
	t.Helper()
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		t.Fatalf("%s: listen %q: %v", what, listen, err)
	}
	if host != "0.0.0.0" && host != "" && host != "::" {
		t.Errorf("%s: listen %q is not every interface's: in a container it must be 0.0.0.0:<port>", what, listen)
	}
	n, err := strconv.ParseInt(port, 10, 32)
	if err != nil {
		t.Fatalf("%s: listen %q: %v", what, listen, err)
	}
	return int32(n)
}

// selects reports whether sel selects a pod with podLabels.
func selects(t *testing.T, sel *metav1.LabelSelector, podLabels map[string]string) bool {
	t.Helper()
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		t.Fatal(err)
	}
	return !s.Empty() && s.Matches(labels.Set(podLabels))
}

// serviceFor returns the Service of m selecting podLabels whose name is
// host, or fails.
func (m *manifests) serviceFor(t *testing.T, host string, podLabels map[string]string) *corev1.Service {
	t.Helper()
	svc := m.services[host]
	if svc == nil {
		t.Fatalf("no Service is named %q", host)
	}
	if len(svc.Spec.Selector) == 0 || !labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(podLabels)) {
		t.Fatalf("Service %s selects %v, not the pods labelled %v", host, svc.Spec.Selector, podLabels)
	}
	return svc
}

// servicePort returns the Service's port numbered port, or fails.
func servicePort(t *testing.T, svc *corev1.Service, port int32) corev1.ServicePort {
	t.Helper()
	for _, p := range svc.Spec.Ports {
		if p.Port == port {
			return p
		}
	}
	t.Fatalf("Service %s has no port %d", svc.Name, port)
	return corev1.ServicePort{}
}

// TestManifestsDecodeStrictly decodes every manifest into its Kubernetes
// type, refusing unknown fields, and checks what every workload shares:
// its selector selects its own pods, it runs as a user that is not root,
// and every Service, PodDisruptionBudget and HorizontalPodAutoscaler finds
// its pods and its ports.
func TestManifestsDecodeStrictly(t *testing.T) {
	m := loadManifests(t)
	for _, w := range m.workloads() {
		if !selects(t, w.selector, w.pod.Labels) {
			t.Errorf("%s: its selector %v does not select its pods %v", w.name, w.selector, w.pod.Labels)
		}
		sc := w.pod.Spec.SecurityContext
		if sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.RunAsUser == nil || *sc.RunAsUser == 0 {
			t.Errorf("%s: the pod's securityContext must set runAsNonRoot and a runAsUser that is not 0", w.name)
		}
		for _, c := range slices.Concat(w.pod.Spec.InitContainers, w.pod.Spec.Containers) {
			csc := c.SecurityContext
			if csc == nil || csc.AllowPrivilegeEscalation == nil || *csc.AllowPrivilegeEscalation ||
				csc.RunAsUser != nil && *csc.RunAsUser == 0 {
				t.Errorf("%s: container %s must forbid privilege escalation and not run as root", w.name, c.Name)
			}
			if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() ||
				c.Resources.Limits.Cpu().IsZero() || c.Resources.Limits.Memory().IsZero() {
				t.Errorf("%s: container %s needs CPU and memory requests and limits", w.name, c.Name)
			}
		}
	}
	for name, svc := range m.services {
		var found bool
		for _, w := range m.workloads() {
			if !labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(w.pod.Labels)) {
				continue
			}
			found = true
			c := &w.pod.Spec.Containers[0]
			for _, p := range svc.Spec.Ports {
				target := containerPort(t, c, p.TargetPort)
				i := slices.IndexFunc(c.Ports, func(cp corev1.ContainerPort) bool { return cp.ContainerPort == target })
				if i < 0 || c.Ports[i].Name != p.Name {
					t.Errorf("Service %s: port %s leads to %d, which is no container port of %s named %s", name, p.Name, target, w.name, p.Name)
				}
			}
		}
		if len(svc.Spec.Selector) == 0 || !found {
			t.Errorf("Service %s selects %v: no workload's pods", name, svc.Spec.Selector)
		}
	}
	for name, pdb := range m.pdbs {
		if !slices.ContainsFunc(m.workloads(), func(w workload) bool { return selects(t, pdb.Spec.Selector, w.pod.Labels) }) {
			t.Errorf("PodDisruptionBudget %s selects no workload's pods", name)
		}
	}
	for name, hpa := range m.hpas {
		ref := hpa.Spec.ScaleTargetRef
		d := m.deployments[ref.Name]
		if ref.APIVersion != "apps/v1" || ref.Kind != "Deployment" || d == nil {
			t.Errorf("HorizontalPodAutoscaler %s scales %s %s %s, which no manifest holds", name, ref.APIVersion, ref.Kind, ref.Name)
		}
	}

	// A typo anywhere in an object is refused, however deep.
	gatewayYAML, err := os.ReadFile(filepath.Join(manifestDir, "gateway.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, typo := range []struct{ field, wrong string }{
		{"replicas: 3", "replicaz: 3"},
		{"terminationGracePeriodSeconds:", "terminationGracePeriodSecond:"},
		{"failureThreshold: 150", "failureTreshold: 150"},
		{"readOnlyRootFilesystem: true", "readOnlyRootFileSystem: true"},
	} {
		t.Run(typo.wrong, func(t *testing.T) {
			if !bytes.Contains(gatewayYAML, []byte(typo.field)) {
				t.Fatalf("gateway.yaml holds no %q to misspell", typo.field)
			}
			bad := bytes.Replace(gatewayYAML, []byte(typo.field), []byte(typo.wrong), 1)
			_, err := decodeManifests(bad)
			name := strings.TrimSuffix(typo.wrong, typo.wrong[strings.Index(typo.wrong, ":"):])
			if err == nil || !strings.Contains(err.Error(), name) {
				t.Fatalf("decoding gateway.yaml with %q: %v, want an unknown field %q refused", typo.wrong, err, name)
			}
		})
	}
}

// TestManifestGateway checks the gateway's Deployment against its own
// config, read from the ConfigMap by the gateway's own parser: the config
// loads; every variable it names is set from a Secret; the probes ask the
// listen port for paths that a gateway started from that config answers
// with 200; the pods outlive shutdown_timeout; and the Service, the
// PodDisruptionBudget and the HorizontalPodAutoscaler find them.
func TestManifestGateway(t *testing.T) {
	m := loadManifests(t)
	d, c := m.deploymentRunning(t, "serve")
	pod := &d.Spec.Template.Spec
	data, dir := m.mountedConfig(t, pod, c)
	fromSecrets := m.secretEnv(t, c)
	cfg, err := gateway.ParseConfig(data, dir)
	if err != nil {
		t.Fatalf("the gateway's ConfigMap: %v", err)
	}
	t.Run("a typo in the config is refused", func(t *testing.T) {
		bad := bytes.Replace(data, []byte("watch: true"), []byte("wacth: true"), 1)
		if _, err := gateway.ParseConfig(bad, dir); err == nil || !strings.Contains(err.Error(), "wacth") {
			t.Fatalf("ParseConfig with wacth: %v, want the unknown key refused", err)
		}
	})

	if d.Spec.Replicas == nil || *d.Spec.Replicas != 3 {
		t.Errorf("the gateway has %v replicas, want 3", d.Spec.Replicas)
	}
	for name, key := range configEnvNames(t, data) {
		if _, ok := fromSecrets[name]; !ok {
			t.Errorf("the config's %s names %s, which the container does not set from a Secret", key, name)
		}
	}
	if cfg.Cluster.NATSURL == "" || cfg.Cluster.Replica != "" {
		t.Errorf("cluster: want nats_url set and replica left to the host name (the pod's name), got %+v", cfg.Cluster)
	}
	if !cfg.Watch {
		t.Error("watch is off: a ConfigMap update would not be served")
	}

	port := listenPort(t, "the gateway's config", cfg.Listen)
	probes := map[string]*corev1.Probe{"startupProbe": c.StartupProbe, "readinessProbe": c.ReadinessProbe, "livenessProbe": c.LivenessProbe}
	wantPath := map[string]string{"startupProbe": "/v2/health/live", "readinessProbe": "/v2/health/ready", "livenessProbe": "/v2/health/live"}
	for kind, p := range probes {
		if p == nil || p.HTTPGet == nil {
			t.Fatalf("the gateway's %s is not an httpGet", kind)
		}
		if got := containerPort(t, c, p.HTTPGet.Port); got != port {
			t.Errorf("%s asks port %d; the config listens on %d", kind, got, port)
		}
		if p.HTTPGet.Path != wantPath[kind] {
			t.Errorf("%s asks %s, want %s", kind, p.HTTPGet.Path, wantPath[kind])
		}
	}

	// Kubernetes sends SIGTERM after the preStop hook; the drain takes up
	// to shutdown_timeout, and the grace period must hold both.
	var preStop time.Duration
	if c.Lifecycle != nil && c.Lifecycle.PreStop != nil && c.Lifecycle.PreStop.Sleep != nil {
		preStop = time.Duration(c.Lifecycle.PreStop.Sleep.Seconds) * time.Second
	}
	if pod.TerminationGracePeriodSeconds == nil {
		t.Fatal("the gateway's pods take the default terminationGracePeriodSeconds")
	}
	grace := time.Duration(*pod.TerminationGracePeriodSeconds) * time.Second
	if grace <= cfg.ShutdownTimeout+preStop {
		t.Errorf("terminationGracePeriodSeconds %s must exceed shutdown_timeout %s and the preStop sleep %s", grace, cfg.ShutdownTimeout, preStop)
	}

	svc := m.serviceFor(t, d.Name, d.Spec.Template.Labels)
	servicePort(t, svc, port)
	var pdbs int
	for _, pdb := range m.pdbs {
		if !selects(t, pdb.Spec.Selector, d.Spec.Template.Labels) {
			continue
		}
		pdbs++
		if pdb.Spec.MinAvailable == nil || pdb.Spec.MinAvailable.IntValue() != 2 {
			t.Errorf("PodDisruptionBudget %s: minAvailable %v, want 2", pdb.Name, pdb.Spec.MinAvailable)
		}
	}
	if pdbs != 1 {
		t.Errorf("%d PodDisruptionBudgets select the gateway, want 1", pdbs)
	}
	var hpas int
	for _, hpa := range m.hpas {
		if hpa.Spec.ScaleTargetRef.Name != d.Name {
			continue
		}
		hpas++
		if hpa.Spec.MinReplicas == nil || *hpa.Spec.MinReplicas < 3 || len(hpa.Spec.Metrics) == 0 ||
			hpa.Spec.Metrics[0].Resource == nil || hpa.Spec.Metrics[0].Resource.Name != corev1.ResourceCPU {
			t.Errorf("HorizontalPodAutoscaler %s: want at least 3 replicas, scaled on CPU", hpa.Name)
		}
	}
	if hpas != 1 {
		t.Errorf("%d HorizontalPodAutoscalers scale the gateway, want 1", hpas)
	}

	t.Run("the probes' paths are served", func(t *testing.T) {
		probeServedPaths(t, cfg, probes)
	})
}

// probeServedPaths serves cfg (on loopback, with the demo model, and the
// state on an embedded engine in place of the NATS cluster) and asks each
// probe's path: each must answer 200.
func probeServedPaths(t *testing.T, cfg gateway.Config, probes map[string]*corev1.Probe) {
	cfg.Listen = "127.0.0.1:0"
	cfg.StateDir = t.TempDir()
	cfg.Repository = t.TempDir()
	for _, f := range []string{"model.onnx", "reference.json"} {
		b, err := os.ReadFile(filepath.Join("../../configs/models/demo/1", f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Join(cfg.Repository, "demo", "1"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(cfg.Repository, "demo", "1", f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	log := slog.New(slog.DiscardHandler)
	env, err := runtime.NewEnvironment(cfg.Runtime, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { env.Close() })
	eng := enginetest.Start(t)
	srv, err := gateway.New(gateway.Options{Config: cfg, Env: env, Log: log, Version: "test", Engine: eng.Conn})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		srv.Shutdown(context.Background())
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.Shutdown(context.Background())
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
	for kind, p := range probes {
		u := "http://" + ln.Addr().String() + p.HTTPGet.Path
		deadline := time.Now().Add(30 * time.Second)
		for {
			code, err := getStatus(client, u)
			if code == http.StatusOK {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: GET %s answered %d (%v), want 200", kind, p.HTTPGet.Path, code, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// getStatus returns the status code of a GET of u.
func getStatus(client *http.Client, u string) (int, error) {
	resp, err := client.Get(u)
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

// TestManifestRetrain checks the retrain service's Deployment: its config
// loads with the service's own parser, every variable it names comes from
// a Secret, and it and the gateway reach each other: the gateway's webhook
// goes to the retrain Service, signed with the Secret the service checks
// with, and the service calls the gateway's Service with the admin token
// the gateway expects.
func TestManifestRetrain(t *testing.T) {
	m := loadManifests(t)
	gw, gc := m.deploymentRunning(t, "serve")
	gwData, gwDir := m.mountedConfig(t, &gw.Spec.Template.Spec, gc)
	gwRefs := m.secretEnv(t, gc)
	gwCfg, err := gateway.ParseConfig(gwData, gwDir)
	if err != nil {
		t.Fatal(err)
	}

	d, c := m.deploymentRunning(t, "retrain")
	data, dir := m.mountedConfig(t, &d.Spec.Template.Spec, c)
	refs := m.secretEnv(t, c)
	cfg, err := pipeline.ParseConfig(data, dir)
	if err != nil {
		t.Fatalf("the retrain service's ConfigMap: %v", err)
	}
	if d.Spec.Replicas == nil || *d.Spec.Replicas != 1 || d.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType {
		t.Errorf("the retrain service must run once (1 replica, Recreate), got %v %s", d.Spec.Replicas, d.Spec.Strategy.Type)
	}
	for name, key := range configEnvNames(t, data) {
		if _, ok := refs[name]; !ok {
			t.Errorf("the retrain config's %s names %s, which the container does not set from a Secret", key, name)
		}
	}
	// The repository and the capture folder move into the engine (the
	// object store and streams): the manifests never point at a folder of
	// the gateway's pods, which the service cannot reach.
	var tree map[string]any
	if err := yaml.Unmarshal(data, &tree); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"repository", "capture_dir"} {
		if _, ok := tree[key]; ok {
			t.Errorf("the retrain config sets %s: the gateway's folders are not the service's", key)
		}
	}

	port := listenPort(t, "the retrain config", cfg.Listen)
	for kind, p := range map[string]*corev1.Probe{"startupProbe": c.StartupProbe, "readinessProbe": c.ReadinessProbe, "livenessProbe": c.LivenessProbe} {
		if p == nil || p.TCPSocket == nil || containerPort(t, c, p.TCPSocket.Port) != port {
			t.Errorf("the retrain service's %s must open a connection to its listen port %d", kind, port)
		}
	}

	// The gateway's webhook to the service.
	i := slices.IndexFunc(gwCfg.Webhooks, func(w outbox.Target) bool { return strings.HasSuffix(w.URL, "/webhook") })
	if i < 0 {
		t.Fatal("the gateway's config has no webhook to the retrain service's /webhook")
	}
	hook := gwCfg.Webhooks[i]
	u, err := url.Parse(hook.URL)
	if err != nil {
		t.Fatal(err)
	}
	svc := m.serviceFor(t, u.Hostname(), d.Spec.Template.Labels)
	hookPort, _ := strconv.ParseInt(u.Port(), 10, 32)
	if p := servicePort(t, svc, int32(hookPort)); containerPort(t, c, p.TargetPort) != port {
		t.Errorf("the webhook reaches port %d of the retrain pods, which listen on %d", containerPort(t, c, p.TargetPort), port)
	}
	if gwRefs[hook.SecretEnv] != refs[cfg.SecretEnv] {
		t.Errorf("the gateway signs with %v, the service checks with %v", gwRefs[hook.SecretEnv], refs[cfg.SecretEnv])
	}

	// The service's calls to the gateway's admin API.
	u, err = url.Parse(cfg.Gateway.URL)
	if err != nil {
		t.Fatal(err)
	}
	gwSvc := m.serviceFor(t, u.Hostname(), gw.Spec.Template.Labels)
	gwPort, _ := strconv.ParseInt(u.Port(), 10, 32)
	if p := servicePort(t, gwSvc, int32(gwPort)); containerPort(t, gc, p.TargetPort) != listenPort(t, "the gateway's config", gwCfg.Listen) {
		t.Errorf("gateway.url %s does not reach the gateway's listen port", cfg.Gateway.URL)
	}
	if gwRefs[gwCfg.Admin.TokenEnv] != refs[cfg.Gateway.TokenEnv] {
		t.Errorf("the gateway's admin token is %v, the service sends %v", gwRefs[gwCfg.Admin.TokenEnv], refs[cfg.Gateway.TokenEnv])
	}
	if cfg.Cluster.NATSURL != gwCfg.Cluster.NATSURL || refs[cfg.Cluster.TokenEnv] != gwRefs[gwCfg.Cluster.TokenEnv] {
		t.Errorf("the service and the gateway must share one NATS cluster and its token")
	}
}

// TestManifestNATS parses nats.conf with the NATS server's own parser, in
// the environment the StatefulSet gives it, and checks it against the
// StatefulSet and its Services: JetStream on, stored on the pod's volume,
// routes to each of the StatefulSet's pods through its headless Service,
// ports as the containers and Services name them, and the token the
// gateway connects with.
func TestManifestNATS(t *testing.T) {
	m := loadManifests(t)
	if len(m.statefulSets) != 1 {
		t.Fatalf("%d StatefulSets, want the one of NATS", len(m.statefulSets))
	}
	var sts *appsv1.StatefulSet
	for _, s := range m.statefulSets {
		sts = s
	}
	pod := &sts.Spec.Template.Spec
	c := &pod.Containers[0]
	if !strings.HasPrefix(c.Image, "nats:") {
		t.Errorf("NATS runs %s, want the official nats image", c.Image)
	}
	i := slices.Index(c.Command, "--config")
	if i < 0 || i+1 == len(c.Command) {
		t.Fatalf("NATS: no --config in %q", c.Command)
	}
	probe := *c
	probe.Args = []string{"--config", c.Command[i+1]}
	data, _ := m.mountedConfig(t, pod, &probe)
	refs := m.secretEnv(t, c)
	t.Setenv("POD_NAME", sts.Name+"-0") // the downward API's metadata.name
	if e := slices.IndexFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == "POD_NAME" }); e < 0 ||
		c.Env[e].ValueFrom == nil || c.Env[e].ValueFrom.FieldRef == nil || c.Env[e].ValueFrom.FieldRef.FieldPath != "metadata.name" {
		t.Error("NATS: POD_NAME must come from the pod's metadata.name")
	}
	file := filepath.Join(t.TempDir(), "nats.conf")
	if err := os.WriteFile(file, data, 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(file)
	if err != nil {
		t.Fatalf("nats.conf: %v", err)
	}
	if opts.ServerName != sts.Name+"-0" {
		t.Errorf("server_name is %q, want the pod's name", opts.ServerName)
	}
	if !opts.JetStream || opts.Cluster.Name == "" {
		t.Error("nats.conf: want JetStream on and a named cluster")
	}
	ports := map[string]int{"client": opts.Port, "cluster": opts.Cluster.Port, "monitor": opts.HTTPPort}
	for name, port := range ports {
		if got := containerPort(t, c, intstr.FromString(name)); int(got) != port {
			t.Errorf("NATS: container port %s is %d, nats.conf says %d", name, got, port)
		}
	}

	// The store on the volume of each pod's own claim, and held within it.
	var storeClaim string
	for _, vm := range c.VolumeMounts {
		if vm.MountPath == opts.StoreDir {
			storeClaim = vm.Name
		}
	}
	ci := slices.IndexFunc(sts.Spec.VolumeClaimTemplates, func(p corev1.PersistentVolumeClaim) bool { return p.Name == storeClaim })
	if ci < 0 {
		t.Fatalf("JetStream's store_dir %s is on no volumeClaimTemplate", opts.StoreDir)
	}
	if size := sts.Spec.VolumeClaimTemplates[ci].Spec.Resources.Requests.Storage().Value(); opts.JetStreamMaxStore <= 0 || opts.JetStreamMaxStore >= size {
		t.Errorf("max_file_store %d must be below the volume's %d bytes", opts.JetStreamMaxStore, size)
	}

	// A route to every pod of the StatefulSet, through its headless Service.
	headless := m.services[sts.Spec.ServiceName]
	if headless == nil || headless.Spec.ClusterIP != corev1.ClusterIPNone || !headless.Spec.PublishNotReadyAddresses ||
		!labels.SelectorFromSet(headless.Spec.Selector).Matches(labels.Set(sts.Spec.Template.Labels)) {
		t.Fatalf("serviceName %q must be a headless Service of the NATS pods publishing them before they are ready", sts.Spec.ServiceName)
	}
	var routes []string
	for _, r := range opts.Routes {
		routes = append(routes, r.Host)
	}
	var want []string
	for i := range int(*sts.Spec.Replicas) {
		want = append(want, fmt.Sprintf("%s-%d.%s:%d", sts.Name, i, headless.Name, opts.Cluster.Port))
	}
	if *sts.Spec.Replicas != 3 || !slices.Equal(routes, want) {
		t.Errorf("routes %v, want one to each of the 3 pods: %v", routes, want)
	}
	for kind, p := range map[string]*corev1.Probe{"startupProbe": c.StartupProbe, "readinessProbe": c.ReadinessProbe, "livenessProbe": c.LivenessProbe} {
		if p == nil || p.HTTPGet == nil || containerPort(t, c, p.HTTPGet.Port) != int32(opts.HTTPPort) || !strings.HasPrefix(p.HTTPGet.Path, "/healthz") {
			t.Errorf("NATS: %s must ask /healthz on the monitoring port %d", kind, opts.HTTPPort)
		}
	}

	// The gateway connects to the client Service with the servers' token.
	gw, gc := m.deploymentRunning(t, "serve")
	gwData, gwDir := m.mountedConfig(t, &gw.Spec.Template.Spec, gc)
	gwRefs := m.secretEnv(t, gc)
	gwCfg, err := gateway.ParseConfig(gwData, gwDir)
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(gwCfg.Cluster.NATSURL)
	if err != nil {
		t.Fatal(err)
	}
	svc := m.serviceFor(t, u.Hostname(), sts.Spec.Template.Labels)
	natsPort, _ := strconv.ParseInt(u.Port(), 10, 32)
	if p := servicePort(t, svc, int32(natsPort)); containerPort(t, c, p.TargetPort) != int32(opts.Port) {
		t.Errorf("cluster.nats_url %s does not reach the servers' client port %d", gwCfg.Cluster.NATSURL, opts.Port)
	}
	if ref, ok := refs["NATS_TOKEN"]; !ok || opts.Authorization == "" || gwRefs[gwCfg.Cluster.TokenEnv] != ref {
		t.Errorf("the servers' token (%v) must be the one the gateway connects with (%v)", ref, gwRefs[gwCfg.Cluster.TokenEnv])
	}
}

// dockerStage is one stage of a Dockerfile: its FROM image, its name, and
// its instructions, each with its arguments (continuation lines joined).
type dockerStage struct {
	image, name string
	lines       [][2]string
}

// parseDockerfile splits a Dockerfile into its stages.
func parseDockerfile(t *testing.T, data []byte) []dockerStage {
	t.Helper()
	var stages []dockerStage
	text := regexp.MustCompile(`\\\n`).ReplaceAllString(string(data), " ")
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		instr, args, _ := strings.Cut(line, " ")
		instr, args = strings.ToUpper(instr), strings.TrimSpace(args)
		if instr == "FROM" {
			f := strings.Fields(args)
			f = slices.DeleteFunc(f, func(s string) bool { return strings.HasPrefix(s, "--platform=") })
			st := dockerStage{image: f[0]}
			if len(f) == 3 && strings.EqualFold(f[1], "AS") {
				st.name = f[2]
			}
			stages = append(stages, st)
			continue
		}
		if len(stages) == 0 {
			if instr != "ARG" {
				t.Fatalf("Dockerfile: %s before the first FROM", instr)
			}
			continue
		}
		st := &stages[len(stages)-1]
		st.lines = append(st.lines, [2]string{instr, args})
	}
	return stages
}

// makeVariables returns the Makefile's simply expanded variables (NAME :=
// value), with $(NAME) references to earlier ones expanded.
func makeVariables(t *testing.T, data []byte) map[string]string {
	t.Helper()
	vars := map[string]string{}
	ref := regexp.MustCompile(`\$\((\w+)\)`)
	for _, m := range regexp.MustCompile(`(?m)^(\w+)\s*:=\s*(.*?)\s*$`).FindAllStringSubmatch(string(data), -1) {
		vars[m[1]] = ref.ReplaceAllStringFunc(m[2], func(r string) string { return vars[r[2:len(r)-1]] })
	}
	return vars
}

// TestDockerfile checks the image against the Makefile and the manifests:
// ONNX Runtime comes from `make onnxruntime` (the Makefile's version and
// SHA-256, which the Dockerfile does not repeat), the library lands where
// ONNXRUNTIME_LIB says, the binary is the entrypoint, the final stage runs
// the builder's Debian release as the numeric non-root user the pods
// name, and it exposes the ports the configs listen on.
func TestDockerfile(t *testing.T) {
	dockerfile, err := os.ReadFile("../../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	makefile, err := os.ReadFile("../../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	vars := makeVariables(t, makefile)
	if vars["ORT_VERSION"] == "" || len(vars["ORT_SHA256"]) != 64 || vars["ORT_LIB"] == "" {
		t.Fatalf("the Makefile's ORT_VERSION, ORT_SHA256 and ORT_LIB: %q %q %q", vars["ORT_VERSION"], vars["ORT_SHA256"], vars["ORT_LIB"])
	}
	// One source of truth: a checksum or a version of ONNX Runtime in the
	// Dockerfile must be the Makefile's (and there should be none).
	for _, sum := range regexp.MustCompile(`\b[0-9a-f]{64}\b`).FindAllString(string(dockerfile), -1) {
		if sum != vars["ORT_SHA256"] {
			t.Errorf("the Dockerfile holds the checksum %s, not the Makefile's ORT_SHA256 %s", sum, vars["ORT_SHA256"])
		}
	}
	for _, m := range regexp.MustCompile(`onnxruntime-node@(\S+)`).FindAllStringSubmatch(string(dockerfile), -1) {
		if m[1] != vars["ORT_VERSION"] {
			t.Errorf("the Dockerfile fetches onnxruntime-node@%s, the Makefile pins %s", m[1], vars["ORT_VERSION"])
		}
	}
	if regexp.MustCompile(`ORT_\w+\s*[:?]?=`).Match(dockerfile) {
		t.Error("the Dockerfile sets one of the Makefile's ORT_ variables")
	}

	stages := parseDockerfile(t, dockerfile)
	if len(stages) < 2 {
		t.Fatalf("the Dockerfile has %d stages, want a build stage and a final one", len(stages))
	}
	final := stages[len(stages)-1]
	byName := map[string]dockerStage{}
	for _, st := range stages {
		byName[st.name] = st
	}
	var user, libEnv, entrypoint string
	var copies []string
	var exposed []string
	for _, l := range final.lines {
		switch l[0] {
		case "USER":
			user = l[1]
		case "ENV":
			if v, ok := strings.CutPrefix(l[1], runtime.LibraryEnv+"="); ok {
				libEnv = v
			}
		case "ENTRYPOINT":
			entrypoint = l[1]
		case "COPY":
			copies = append(copies, l[1])
		case "EXPOSE":
			exposed = append(exposed, strings.Fields(l[1])...)
		}
	}

	// The library: fetched by make in the build stage, copied to where the
	// environment variable the runtime reads points.
	var build dockerStage
	var libCopied, binCopied bool
	for _, cp := range copies {
		f := strings.Fields(cp)
		from, ok := strings.CutPrefix(f[0], "--from=")
		if !ok || len(f) != 3 {
			continue
		}
		build = byName[from]
		workdir := "/"
		for _, l := range build.lines {
			if l[0] == "WORKDIR" {
				workdir = path.Join(workdir, l[1])
			}
		}
		switch path.Clean(f[1]) {
		case path.Join(workdir, vars["ORT_LIB"]):
			libCopied = f[2] == libEnv && libEnv != ""
		case path.Join(workdir, "bin/infergate"):
			binCopied = path.Base(f[2]) == "infergate" && slices.Contains([]string{"/usr/local/bin", "/usr/bin"}, path.Dir(f[2]))
		}
	}
	// The demo model the gateway's seed-models copies into the repository
	// is the image's copy of configs/models, which holds each model the
	// config names.
	m := loadManifests(t)
	gw, gc := m.deploymentRunning(t, "serve")
	gwData, gwDir := m.mountedConfig(t, &gw.Spec.Template.Spec, gc)
	m.secretEnv(t, gc)
	gwCfg, err := gateway.ParseConfig(gwData, gwDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, ic := range gw.Spec.Template.Spec.InitContainers {
		if len(ic.Command) != 4 || ic.Command[0] != "cp" || ic.Image != gc.Image ||
			path.Clean(ic.Command[3]) != gwCfg.Repository || !slices.Contains(copies, "configs/models "+path.Dir(ic.Command[2])) {
			t.Errorf("init container %s must copy the image's configs/models into the repository %s: %q", ic.Name, gwCfg.Repository, ic.Command)
		}
		for name := range gwCfg.Models {
			if _, err := os.Stat(filepath.Join("../../configs/models", name)); err != nil {
				t.Errorf("the config names model %s, which configs/models does not hold for the seed: %v", name, err)
			}
		}
	}

	if !libCopied {
		t.Errorf("the final stage must copy the build stage's %s to %s=%q", vars["ORT_LIB"], runtime.LibraryEnv, libEnv)
	}
	if !binCopied || entrypoint != `["infergate"]` {
		t.Errorf("the final stage must copy bin/infergate onto the PATH and run it as ENTRYPOINT [\"infergate\"], got %s", entrypoint)
	}
	if !slices.ContainsFunc(build.lines, func(l [2]string) bool { return l[0] == "RUN" && strings.Contains(l[1], "make onnxruntime") }) ||
		!slices.ContainsFunc(build.lines, func(l [2]string) bool { return l[0] == "RUN" && strings.Contains(l[1], "make build") }) {
		t.Error("the build stage must run `make onnxruntime` and `make build`, so that the Makefile decides what is fetched and how it is built")
	}

	// Debian release: golang:<v>-<codename> and debian:<codename>-slim.
	builderRelease := build.image[strings.LastIndex(build.image, "-")+1:]
	finalRelease := strings.TrimSuffix(strings.TrimPrefix(final.image, "debian:"), "-slim")
	if !strings.HasPrefix(build.image, "golang:1.26") || !strings.HasPrefix(final.image, "debian:") || builderRelease != finalRelease {
		t.Errorf("the build stage (%s) and the final one (%s) must be one Debian release", build.image, final.image)
	}

	// A numeric user that is not root, the one the pods run as.
	uid, _, _ := strings.Cut(user, ":")
	n, err := strconv.ParseInt(uid, 10, 64)
	if err != nil || n == 0 {
		t.Fatalf("the final stage's USER %q must be a numeric user that is not root", user)
	}
	for _, cmd := range []string{"serve", "retrain"} {
		d, _ := m.deploymentRunning(t, cmd)
		if sc := d.Spec.Template.Spec.SecurityContext; sc == nil || sc.RunAsUser == nil || *sc.RunAsUser != n {
			t.Errorf("Deployment %s must run as the image's user %d", d.Name, n)
		}
	}

	// The ports the configs listen on.
	for _, cmd := range []string{"serve", "retrain"} {
		d, c := m.deploymentRunning(t, cmd)
		data, _ := m.mountedConfig(t, &d.Spec.Template.Spec, c)
		var cfg struct {
			Listen string `yaml:"listen"`
		}
		if err := yaml.Unmarshal(data, &cfg); err != nil {
			t.Fatal(err)
		}
		port := strconv.Itoa(int(listenPort(t, d.Name, cfg.Listen)))
		if !slices.Contains(exposed, port) {
			t.Errorf("the image exposes %v, not %s, where %s listens", exposed, port, d.Name)
		}
	}
}
