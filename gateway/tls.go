package gateway

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
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

// certCheckEvery is how often a handshake may look whether the files changed.
const certCheckEvery = time.Second

var tlsReloadErrors = metrics.NewCounter(`infergate_tls_reload_errors_total`)

// certReloader hands out the certificate of its files, reading them again
// when their modification times change; a pair that fails to load keeps the
// previous one. It is safe for concurrent use.
type certReloader struct {
	cfg TLSConfig
	log *slog.Logger

	// mu guards the fields below.
	mu      sync.Mutex
	cert    *tls.Certificate
	mtimes  [2]time.Time
	checked time.Time
}

// newCertReloader loads cfg's certificate, which must load.
func newCertReloader(cfg TLSConfig, log *slog.Logger) (*certReloader, error) {
	r := &certReloader{cfg: cfg, log: log}
	mtimes, err := r.fileTimes()
	if err == nil {
		err = r.loadLocked(mtimes)
	}
	if err != nil {
		return nil, err
	}
	return r, nil
}

// tlsConfig returns a server configuration that uses r's certificate.
func (r *certReloader) tlsConfig() *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: r.certificate}
}

func (r *certReloader) certificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if now := time.Now(); now.Sub(r.checked) >= certCheckEvery {
		r.checked = now
		mtimes, err := r.fileTimes()
		if err == nil && mtimes != r.mtimes {
			err = r.loadLocked(mtimes)
			if err == nil {
				r.log.Info("TLS certificate reloaded", "cert_file", r.cfg.CertFile)
			}
		}
		if err != nil {
			tlsReloadErrors.Inc()
			r.log.Error("TLS certificate not reloaded; serving the previous one", "error", err)
		}
	}
	return r.cert, nil
}

func (r *certReloader) fileTimes() ([2]time.Time, error) {
	var m [2]time.Time
	for i, path := range []string{r.cfg.CertFile, r.cfg.KeyFile} {
		fi, err := os.Stat(path)
		if err != nil {
			return m, fmt.Errorf("cannot read TLS file: %w", err)
		}
		m[i] = fi.ModTime()
	}
	return m, nil
}

func (r *certReloader) loadLocked(mtimes [2]time.Time) error {
	cert, err := tls.LoadX509KeyPair(r.cfg.CertFile, r.cfg.KeyFile)
	if err != nil {
		return fmt.Errorf("cannot load TLS certificate %q with key %q: %w", r.cfg.CertFile, r.cfg.KeyFile, err)
	}
	r.cert, r.mtimes = &cert, mtimes
	return nil
}
