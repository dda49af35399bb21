package blacklist

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/smsflow/smsflow/pkg/phone"
)

// Columns that hold the number in a CSV list, matched case-insensitively.
var numberColumns = []string{"number", "phone", "msisdn", "to", "e164"}

// maxErrors is how many bad lines one error reports before Parse gives up.
const maxErrors = 10

// maxLine bounds a line; nothing longer is a list entry.
const maxLine = 4096

// LineError is a bad line in a list.
type LineError struct {
	Line int // 1-based
	Err  error
}

func (e *LineError) Error() string { return fmt.Sprintf("line %d: %v", e.Line, e.Err) }
func (e *LineError) Unwrap() error { return e.Err }

// Parse reads a blacklist and returns the E.164 keys of its numbers (see
// key; duplicates are kept). Two formats are accepted:
//
//   - one number a line; blank lines are skipped and "#" starts a comment,
//     on its own line or after a number;
//   - CSV with a header row naming the number column: number, phone, msisdn,
//     to or e164 (any case). Other columns are ignored; "#" lines are comments.
//     Fields are separated by commas, or by semicolons when the header has
//     semicolons and no comma (a spreadsheet's export in many locales).
//
// The first line that is not blank or a comment decides: it is a CSV header
// when it contains a comma or semicolon or is just one of those column names.
//
// Numbers are normalised as phone.Normalize does, national numbers in region
// (e.g. "CZ"; "" requires +E.164).
//
// One bad line fails the whole list: the error lists the bad lines (the
// first ten, each a *LineError with its 1-based line number) and no keys are
// returned. A list with a mistake is more likely truncated, mangled or in the
// wrong format than right but for one line, and loading the rest would
// silently drop numbers; the caller keeps the list it had instead.
func Parse(r io.Reader, region string) ([]uint64, error) {
	return parse(r, region, 0)
}

// parse is Parse with room for about expect numbers made up front, so a big
// list is not copied while it grows.
func parse(r io.Reader, region string, expect int) ([]uint64, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	p := &parser{region: region, keys: make([]uint64, 0, expect)}
	// Look for the first content line to tell the format.
	for {
		line, err := p.readLine(br)
		if line == nil && err != nil {
			return p.result(err)
		}
		line = bytes.TrimPrefix(line, []byte("\uFEFF"))
		content := bytes.TrimSpace(stripComment(line))
		if len(content) == 0 {
			if err != nil {
				return p.result(err)
			}
			continue
		}
		if comma, ok := header(string(content)); ok {
			return p.parseCSV(comma, io.MultiReader(bytes.NewReader(append(slices.Clone(line), '\n')), br), p.line-1)
		}
		p.add(p.line, content)
		if err != nil {
			return p.result(err)
		}
		return p.parseLines(br)
	}
}

type parser struct {
	region string
	keys   []uint64
	errs   []error
	line   int // lines read so far
}

func (p *parser) parseLines(br *bufio.Reader) ([]uint64, error) {
	for len(p.errs) < maxErrors {
		line, err := p.readLine(br)
		if content := bytes.TrimSpace(stripComment(line)); len(content) > 0 {
			p.add(p.line, content)
		}
		if err != nil {
			return p.result(err)
		}
	}
	return p.result(io.EOF)
}

// readLine returns the next line without its end of line; err is io.EOF after
// the last one (line may be non-nil with it, for a last line without "\n").
func (p *parser) readLine(br *bufio.Reader) ([]byte, error) {
	line, err := br.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) || len(line) > maxLine {
		p.line++
		return nil, &LineError{Line: p.line, Err: fmt.Errorf("longer than %d bytes", maxLine)}
	}
	if len(line) == 0 && err != nil {
		return nil, err
	}
	p.line++
	return bytes.TrimRight(line, "\r\n"), err
}

func (p *parser) parseCSV(comma rune, r io.Reader, skipped int) ([]uint64, error) {
	cr := csv.NewReader(r)
	cr.Comma = comma
	cr.Comment = '#'
	cr.FieldsPerRecord = -1
	cr.ReuseRecord = true
	header, err := cr.Read()
	header = slices.Clone(header) // ReuseRecord: the next Read overwrites it
	if err != nil {
		return nil, &LineError{Line: skipped + 1, Err: fmt.Errorf("csv header: %w", err)}
	}
	col := -1
	for i, h := range header {
		h = strings.TrimSpace(h)
		if slices.ContainsFunc(numberColumns, func(c string) bool { return strings.EqualFold(c, h) }) {
			col = i
			break
		}
	}
	if col < 0 {
		return nil, &LineError{Line: skipped + 1, Err: fmt.Errorf("csv header %q has no number column (want one of %s)",
			shorten(strings.Join(header, ",")), strings.Join(numberColumns, ", "))}
	}
	for len(p.errs) < maxErrors {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		var pe *csv.ParseError
		if errors.As(err, &pe) {
			p.errs = append(p.errs, &LineError{Line: skipped + pe.Line, Err: pe.Err})
			continue
		}
		if err != nil {
			return nil, err
		}
		line, _ := cr.FieldPos(0)
		if col >= len(rec) {
			p.errs = append(p.errs, &LineError{Line: skipped + line, Err: fmt.Errorf("no column %d (%s)", col+1, header[col])})
			continue
		}
		if v := strings.TrimSpace(rec[col]); v != "" {
			p.add(skipped+line, []byte(v))
		} else {
			p.errs = append(p.errs, &LineError{Line: skipped + line, Err: fmt.Errorf("empty %s", header[col])})
		}
	}
	return p.result(io.EOF)
}

func (p *parser) add(line int, raw []byte) {
	if phone.Canonical(raw) { // most lines of a big list: no allocation
		k, _ := key(raw)
		p.keys = append(p.keys, k)
		return
	}
	e164, err := phone.Normalize(string(raw), p.region)
	if err != nil {
		p.errs = append(p.errs, &LineError{Line: line, Err: err})
		return
	}
	k, _ := key(e164) // a normalised number always has a key
	p.keys = append(p.keys, k)
}

// result ends a parse that stopped with err (io.EOF: the end of input).
func (p *parser) result(err error) ([]uint64, error) {
	if err != nil && !errors.Is(err, io.EOF) {
		p.errs = append(p.errs, err)
	}
	if len(p.errs) > 0 {
		if len(p.errs) >= maxErrors {
			p.errs = append(p.errs, fmt.Errorf("stopped after %d errors", len(p.errs)))
		}
		return nil, errors.Join(p.errs...)
	}
	return p.keys, nil
}

// header reports whether the first content line is a CSV header, and its
// field separator.
func header(content string) (comma rune, ok bool) {
	switch {
	case strings.Contains(content, ","):
		return ',', true
	case strings.Contains(content, ";"):
		return ';', true
	}
	return ',', slices.ContainsFunc(numberColumns, func(c string) bool { return strings.EqualFold(c, content) })
}

func stripComment(b []byte) []byte {
	if i := bytes.IndexByte(b, '#'); i >= 0 {
		return b[:i]
	}
	return b
}

func shorten(s string) string {
	const limit = 60
	if r := []rune(s); len(r) > limit {
		return string(r[:limit]) + "…"
	}
	return s
}
