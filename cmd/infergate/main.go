// Command infergate is the one binary of the infergate ML gateway.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	goruntime "runtime"
	"runtime/debug"
	"syscall"

	"github.com/infergate/infergate/drift"
	"github.com/infergate/infergate/gateway"
	"github.com/infergate/infergate/retrain/trainer"
	"github.com/infergate/infergate/runtime"
)

const usage = `infergate: an ML inference gateway speaking the Open Inference Protocol (KServe V2).

Usage:
  infergate serve [--config F] [--listen ADDR] [--log-level L] [--log-json]
  infergate bench [--url U] [--model M] [--payload F | --rows N] [--rate R | --rates R,R,...]
                  [--connections N] [--duration D] [--warmup D] [--ceiling http|compute]
                  [--json F] [--markdown F] [--svg F] [--quiet]
  infergate bench --suite [--out bench/RESULTS.md] [--drift-pairs N | --score] [--duration D] [--warmup D] [--quiet]
  infergate demo [--replicas N] [--forever] [--rate R] [--shift-after D] [--listen ADDR] [--work DIR] [--timeout D]
  infergate profile --model DIR/model.onnx --data train.csv|train.jsonl [--out F] [--categorical A,B]
                    [--bins N] [--sample N] [--predictions=false] [--quiet]
  infergate retrain [--config configs/retrain.yaml] [--listen ADDR] [--grace D] [--log-level L] [--log-json]
  infergate retrain runs [--config F | --url U] [--model M] [--json]
  infergate capture export --model M --out F [--format parquet|jsonl] [--version V] [--since T|D]
                           [--config configs/demo.yaml] [--quiet]
  infergate score --model M --in F.parquet|.csv|.jsonl --out F.parquet|.csv|.jsonl [--config configs/demo.yaml]
                  [--version V] [--map feature=column]... [--carry A,B] [--allow-extra] [--rejects F]
                  [--fail-on-drift] [--batch N] [--report F] [--quiet]
  infergate train --demo [--out DIR]
  infergate train --mlp 256,1024,1024,10 --out DIR [--seed N]
  infergate version
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	var err error
	switch cmd, args := os.Args[1], os.Args[2:]; cmd {
	case "serve":
		err = serve(args)
	case "bench":
		err = benchCmd(args)
	case "demo":
		err = demo(args)
	case "profile":
		err = profile(args)
	case "retrain":
		err = retrainCmd(args)
	case "capture":
		err = captureCmd(args)
	case "score":
		err = scoreCmd(args)
	case "train":
		err = train(args)
	case "version":
		fmt.Printf("infergate %s %s/%s\n", version(), goruntime.GOOS, goruntime.GOARCH)
	case "help", "-h", "--help":
		fmt.Print(usage)
	default:
		fmt.Fprintf(os.Stderr, "infergate: unknown command %q\n\n%s", cmd, usage)
		os.Exit(2)
	}
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(os.Stderr, "infergate %s: %v\n", os.Args[1], err)
		}
		os.Exit(1)
	}
}

// version returns the module version this binary was built from.
// releaseVersion is stamped by the Makefile (-ldflags -X) from git describe.
var releaseVersion string

// version names this build: the stamped release, else the module version,
// else the commit it was built from (with "+dirty" for uncommitted
// changes), else "dev".
func version() string {
	if releaseVersion != "" {
		return releaseVersion
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "dev"
	}
	if bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	var revision, modified string
	for _, setting := range bi.Settings {
		switch setting.Key {
		case "vcs.revision":
			revision = setting.Value
		case "vcs.modified":
			modified = setting.Value
		}
	}
	if revision == "" {
		return "dev"
	}
	version := "dev-" + revision[:min(12, len(revision))]
	if modified == "true" {
		version += "+dirty"
	}
	return version
}

func serve(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	configPath := fs.String("config", "configs/demo.yaml", "config file")
	listen := fs.String("listen", "", "listen address, overriding the config's listen")
	logs := addLogFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	log, err := logs.logger()
	if err != nil {
		return err
	}
	cfg, err := gateway.LoadConfig(*configPath)
	if err != nil {
		return err
	}
	if *listen != "" {
		cfg.Listen = *listen
	}

	env, err := runtime.NewEnvironment(cfg.Runtime, log)
	if err != nil {
		return err
	}
	defer env.Close()
	eng, err := openEngine(cfg.Cluster.Config, cfg.StateDir, "infergate serve", log)
	if err != nil {
		return err
	}
	defer eng.close()
	var srv *gateway.Server
	err = startRetried(cfg.Cluster.Config, eng.connection(), log, "gateway", func() (err error) {
		srv, err = gateway.New(gateway.Options{Config: cfg, ConfigPath: *configPath, Env: env, Log: log, Version: version(), Engine: eng.connection()})
		return err
	})
	if err != nil {
		return err
	}
	served := make(chan error, 1)
	go func() { served <- srv.ListenAndServe() }()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	select {
	case err := <-served:
		srv.Shutdown(context.Background())
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down: draining requests in flight")
	if err := srv.Shutdown(context.Background()); err != nil {
		return fmt.Errorf("cannot shut down cleanly: %w", err)
	}
	log.Info("stopped")
	return <-served
}

// logFlags are the --log-level and --log-json flags of a long-running command.
type logFlags struct {
	level *string
	json  *bool
}

func addLogFlags(fs *flag.FlagSet) logFlags {
	return logFlags{
		level: fs.String("log-level", "info", "log level: debug, info, warn, error"),
		json:  fs.Bool("log-json", false, "log JSON lines instead of text"),
	}
}

// logger returns the logger the parsed flags ask for, writing to stderr.
func (f logFlags) logger() (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(*f.level)); err != nil {
		return nil, fmt.Errorf("invalid --log-level %q: want debug, info, warn or error", *f.level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	if *f.json {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts)), nil
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts)), nil
}

func train(args []string) error {
	fs := flag.NewFlagSet("train", flag.ContinueOnError)
	demo := fs.Bool("demo", false, "train the demo model on the seeded synthetic data set")
	mlp := fs.String("mlp", "", "instead, write an untrained MLP of these layer widths (input first, classes last; Relu between, Softmax at the end) with seeded random weights, such as the bench suite's heavy model 256,1024,1024,10")
	seed := fs.Uint64("seed", heavySeed, "--mlp: seed of the weights")
	out := fs.String("out", "configs/models/demo", "model folder to write version 1 into (required with --mlp)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *mlp != "" {
		outSet := false
		fs.Visit(func(f *flag.Flag) { outSet = outSet || f.Name == "out" })
		if *demo || !outSet {
			return errors.New("--mlp needs --out and goes without --demo")
		}
		widths, err := parseInts(*mlp)
		if err != nil {
			return fmt.Errorf("invalid --mlp: %w", err)
		}
		return writeMLP(*out, *seed, widths)
	}
	if !*demo {
		return errors.New("want --demo or --mlp")
	}
	onnx, err := trainer.DemoModel()
	if err != nil {
		return err
	}
	path := filepath.Join(*out, "1", "model.onnx")
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("cannot create %q: %w", filepath.Dir(path), err)
	}
	if err := os.WriteFile(path, onnx, 0o644); err != nil {
		return fmt.Errorf("cannot write %q: %w", path, err)
	}
	fmt.Printf("wrote %s (%d bytes)\n", path, len(onnx))
	ref, err := trainer.DemoReference()
	if err != nil {
		return err
	}
	refPath := filepath.Join(*out, "1", drift.ReferenceFile)
	if err := ref.WriteFile(refPath); err != nil {
		return err
	}
	fmt.Printf("wrote %s (%d features, %d predictions)\n", refPath, len(ref.Features), len(ref.Predictions))
	return nil
}
