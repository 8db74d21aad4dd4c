package capture

// MetricHelp is the HELP text of each metric family a Writer or Labels
// store exports, by family name, for a /metrics writer that adds HELP
// lines. It is read-only.
var MetricHelp = map[string]string{
	"infergate_capture_records_total":        "Captured records shipped to the engine (counted once the engine acknowledged their block).",
	"infergate_capture_dropped_total":        "Captured records dropped because the capture buffer was full.",
	"infergate_capture_lost_total":           "Captured records lost: more than 16 blocks unshipped, or left at shutdown with the engine away.",
	"infergate_capture_bytes_total":          "Compressed bytes of captured records shipped to the engine.",
	"infergate_capture_blocks_total":         "Blocks of captured records shipped to the engine.",
	"infergate_capture_errors_total":         "Errors shipping captured records to the engine.",
	"infergate_capture_buffered":             "Captured records waiting in the buffer now.",
	"infergate_capture_labels_total":         "Labels recorded through feedback.",
	"infergate_capture_label_messages_total": "Feedback messages that carried recorded labels.",
	"infergate_capture_label_errors_total":   "Failed tries to record feedback labels.",
}
