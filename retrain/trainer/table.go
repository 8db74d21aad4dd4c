package trainer

import (
	"bufio"
	"fmt"
	"os"

	"github.com/infergate/infergate/retrain/table"
)

// WriteSyntheticTable writes rows rows of Synthetic's customers (or
// SyntheticShifted's) to path, in the format its extension names
// (Parquet, CSV or JSON lines): an id column ("c0", "c1", ...) and the
// eight features as FP32, drawn a block of 65536 rows at a time from
// seed, seed+1, ... so that memory stays bounded. `infergate score`'s
// tests and bench score such files.
func WriteSyntheticTable(path string, rows int, seed uint64, shifted bool) error {
	format, err := table.FormatOf(path)
	if err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("cannot write a synthetic table: %w", err)
	}
	defer f.Close()
	bw := bufio.NewWriterSize(f, 1<<20)
	var w *table.Writer
	values := make([]table.Value, 0, 9)
	for start, block := 0, 0; start < rows; start, block = start+65536, block+1 {
		n := min(65536, rows-start)
		d := Synthetic(seed+uint64(block), n)
		if shifted {
			d = SyntheticShifted(seed+uint64(block), n)
		}
		if w == nil {
			cols := []table.Column{{Name: "id", Kind: table.String}}
			for _, name := range d.Features {
				cols = append(cols, table.Column{Name: name, Kind: table.Float32})
			}
			if w, err = table.NewWriter(bw, format, cols, table.WriteOptions{CreatedBy: "infergate test data"}); err != nil {
				return err
			}
		}
		for i, x := range d.X {
			values = append(values[:0], table.TextValue(fmt.Appendf(nil, "c%d", start+i)))
			for _, v := range x {
				values = append(values, table.Float32Value(v))
			}
			if err := w.WriteRow(values); err != nil {
				return err
			}
		}
	}
	if err := w.Close(); err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("cannot write a synthetic table: %w", err)
	}
	return f.Close()
}
