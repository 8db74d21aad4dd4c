// Package detection measures how well infergate's drift decisions catch
// shifted windows and how often they flag clean ones, against a scipy
// baseline: per-feature two-sample Kolmogorov-Smirnov by
// scipy.stats.ks_2samp with a Bonferroni correction, drifted when any
// feature's p-value is below 0.05/d, the detector that "Failing Loudly"
// (Rabanser et al., 2019) found hard to beat.
//
// The data are scikit-learn's bundled breast_cancer and wine sets,
// exported by sklearn_data.py, and the demo's generator
// (retrain/trainer.Synthetic). Each set's rows are split at random into a
// reference and a pool, many times over; windows of 10 rows up to the
// pool's size are drawn without replacement from the pool, so that a clean
// window is exchangeable with its reference (the demo draws fresh rows for
// windows of 10 to 1000 rows and a 5000-row reference), left
// clean or shifted (Gaussian noise, a mean shift of half the features,
// class knockout, a thin mean shift of every feature), rounded to float32
// as the gateway sees an FP32 input, and judged by drift.Offline under
// each configuration compared (method mmd among them, on a subset of the
// windows) and by scipy_baseline.py on the same
// reference rows and windows. Rates come with 95% Wilson intervals; a
// second table compares power at the baseline's false-alarm rate.
//
// Run is safe to call from several goroutines at once, each call with its
// own Options.
package detection
