package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/infergate/infergate/retrain/pipeline"
	"github.com/infergate/infergate/runtime"
)

// retrainCmd serves the retrain-and-validate service until SIGINT or
// SIGTERM, or, as `retrain runs`, prints its runs.
func retrainCmd(args []string) error {
	if len(args) > 0 && args[0] == "runs" {
		return retrainRuns(args[1:], os.Stdout)
	}
	fs := flag.NewFlagSet("retrain", flag.ContinueOnError)
	configPath := fs.String("config", "configs/retrain.yaml", "config file")
	listen := fs.String("listen", "", "listen address, overriding the config's listen")
	grace := fs.Duration("grace", 30*time.Second, "how long SIGINT or SIGTERM lets a running run finish before interrupting it")
	logs := addLogFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	log, err := logs.logger()
	if err != nil {
		return err
	}
	cfg, err := pipeline.LoadConfig(*configPath)
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
	var progress io.Writer
	if st, err := os.Stderr.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 && !*logs.json {
		progress = os.Stderr
	}
	eng, err := openEngine(cfg.Cluster, cfg.StateDir, "infergate retrain", log)
	if err != nil {
		return err
	}
	defer eng.close()
	var svc *pipeline.Service
	err = startRetried(cfg.Cluster, eng.connection(), log, "retrain service", func() (err error) {
		svc, err = pipeline.Open(pipeline.Options{Config: cfg, Env: env, Log: log, Progress: progress, Engine: eng.connection()})
		return err
	})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		svc.Close()
		return fmt.Errorf("cannot listen on %s: %w", cfg.Listen, err)
	}
	srv := &http.Server{Handler: svc.Handler(), ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second,
		WriteTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	log.Info("retrain service listening", "addr", ln.Addr().String(), "webhook", "POST /webhook", "runs", "GET /runs")

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	select {
	case err := <-served:
		stop()
		svc.Close()
		return err
	case <-ctx.Done():
	}
	stop() // a second signal ends the process at once
	log.Info("shutting down: a running run may finish", "grace", *grace)
	httpCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	srv.Shutdown(httpCtx)
	runCtx, cancelRuns := context.WithTimeout(context.Background(), *grace)
	defer cancelRuns()
	if err := svc.Shutdown(runCtx); err != nil {
		return fmt.Errorf("cannot shut down cleanly: %w", err)
	}
	log.Info("stopped")
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// retrainRuns prints the runs: from the store, or from a running service.
func retrainRuns(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("retrain runs", flag.ContinueOnError)
	configPath := fs.String("config", "configs/retrain.yaml", "config file, whose state_dir holds the runs")
	base := fs.String("url", "", "base URL of a running retrain service to ask instead, e.g. http://127.0.0.1:8090")
	model := fs.String("model", "", "only the runs of this model")
	asJSON := fs.Bool("json", false, "print the runs as JSON")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var runs []pipeline.Run
	where := *base
	if *base != "" {
		resp, err := http.Get(strings.TrimSuffix(*base, "/") + "/runs?limit=0&model=" + url.QueryEscape(*model))
		if err != nil {
			return fmt.Errorf("cannot ask the retrain service: %w", err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			msg, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
			return fmt.Errorf("cannot list runs: the retrain service answered %s: %s", resp.Status, strings.TrimSpace(string(msg)))
		}
		if err := json.NewDecoder(resp.Body).Decode(&runs); err != nil {
			return fmt.Errorf("cannot decode the runs: %w", err)
		}
	} else {
		cfg, err := pipeline.LoadConfig(*configPath)
		if err != nil {
			return err
		}
		quiet := slog.New(slog.DiscardHandler)
		eng, err := openEngine(cfg.Cluster, cfg.StateDir, "infergate retrain runs", quiet)
		if err != nil {
			return err
		}
		runs, err = pipeline.ListRuns(eng.connection())
		where = eng.connection().URL
		eng.close()
		if err != nil {
			return err
		}
		kept := runs[:0]
		for _, r := range runs {
			if *model == "" || r.Model == *model {
				kept = append(kept, r)
			}
		}
		runs = kept
	}
	if *asJSON {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(runs)
	}
	if len(runs) == 0 {
		_, err := fmt.Fprintf(out, "no runs in %s\n", where)
		return err
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "RUN\tMODEL\tOUTCOME\tQUEUED\tTOOK\tSTEP\tVERSION\tREASON")
	for _, r := range runs {
		took, step := "-", "-"
		switch {
		case !r.Finished.IsZero():
			took = r.Finished.Sub(r.Started).Round(time.Millisecond).String()
		case !r.Started.IsZero():
			took = time.Since(r.Started).Round(time.Second).String() + "…"
		}
		if len(r.Steps) > 0 {
			step = r.Steps[len(r.Steps)-1].Name
		}
		reason := r.Reason
		if len(reason) > 120 {
			reason = reason[:119] + "…"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.ID, r.Model, r.Outcome, r.QueuedAt.Local().Format(time.DateTime),
			took, step, cmp.Or(r.Candidate, "-"), reason)
	}
	return tw.Flush()
}
