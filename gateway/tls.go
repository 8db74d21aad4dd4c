package gateway

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/metrics"
)

// TLSConfig configures HTTPS for the gateway's listener.
type TLSConfig struct {
	// CertFile and KeyFile are PEM files, relative to the config file; both
	// or neither. They are read again when they change, without a restart.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

func (c TLSConfig) enabled() bool { return c.CertFile != "" }

func (c TLSConfig) validate() error {
	if (c.CertFile == "") != (c.KeyFile == "") {
		return errors.New("tls: cert_file and key_file go together; set both or neither")
	}
	return nil
}

// certCheckEvery is how often the files are looked at for a change.
const certCheckEvery = time.Second

var tlsReloadErrors = metrics.NewCounter(`infergate_tls_reload_errors_total`)

// certReloader hands out the certificate of its files, read again by
// watch when their modification times change; a pair that fails to load
// keeps the previous one. Handshakes only load a pointer: no file is read
// on their path. It is safe for concurrent use.
type certReloader struct {
	cfg  TLSConfig
	log  *slog.Logger
	cert atomic.Pointer[tls.Certificate]
	// mtimes and lastErr are watch's own.
	mtimes  [2]time.Time
	lastErr string
}

// newCertReloader loads cfg's certificate, which must load.
func newCertReloader(cfg TLSConfig, log *slog.Logger) (*certReloader, error) {
	r := &certReloader{cfg: cfg, log: log}
	if err := r.reload(); err != nil {
		return nil, err
	}
	return r, nil
}

// tlsConfig returns a server configuration that uses r's certificate.
func (r *certReloader) tlsConfig() *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
		return r.cert.Load(), nil
	}}
}

// watch reloads the certificate when its files change, until stop closes.
// A failure is logged once until it changes or passes.
func (r *certReloader) watch(stop <-chan struct{}) {
	t := time.NewTicker(certCheckEvery)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		switch err := r.reload(); {
		case err != nil && err.Error() != r.lastErr:
			tlsReloadErrors.Inc()
			r.log.Error("TLS certificate not reloaded; serving the previous one", "error", err)
			r.lastErr = err.Error()
		case err == nil && r.lastErr != "":
			r.lastErr = ""
		}
	}
}

// reload loads the files when their modification times differ from those
// last loaded.
func (r *certReloader) reload() error {
	var mtimes [2]time.Time
	for i, path := range []string{r.cfg.CertFile, r.cfg.KeyFile} {
		fi, err := os.Stat(path)
		if err != nil {
			return fmt.Errorf("cannot read TLS file: %w", err)
		}
		mtimes[i] = fi.ModTime()
	}
	if mtimes == r.mtimes {
		return nil
	}
	cert, err := tls.LoadX509KeyPair(r.cfg.CertFile, r.cfg.KeyFile)
	if err != nil {
		return fmt.Errorf("cannot load TLS certificate %q with key %q: %w", r.cfg.CertFile, r.cfg.KeyFile, err)
	}
	if r.cert.Swap(&cert) != nil {
		r.log.Info("TLS certificate reloaded", "cert_file", r.cfg.CertFile)
	}
	r.mtimes = mtimes
	return nil
}
