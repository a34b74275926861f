package cli

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// value is a generic, order-preserving document tree built from YAML or JSON.
// It keeps the line each value starts on so that errors can point at it.
type value struct {
	kind  valueKind
	str   string   // scalars: the literal text (strings: the string itself)
	keys  []string // maps
	vals  []*value // maps: the values, parallel to keys; lists: the items
	line  int      // 1-based line in the source, 0 when unknown
	index map[string]int
}

type valueKind int

const (
	vNull valueKind = iota
	vBool
	vInt
	vFloat
	vString
	vMap
	vList
)

func (k valueKind) String() string {
	switch k {
	case vNull:
		return "null"
	case vBool:
		return "a boolean"
	case vInt:
		return "an integer"
	case vFloat:
		return "a number"
	case vString:
		return "a string"
	case vMap:
		return "an object"
	case vList:
		return "a list"
	}
	return "a value"
}

// Limits that keep hostile input (deep nesting, alias bombs) cheap.
const (
	maxDepth = 100
	maxNodes = 1 << 20
)

func newMap(line int) *value { return &value{kind: vMap, line: line} }

// get returns the value of key in a map, or nil.
func (v *value) get(key string) *value {
	if v == nil || v.kind != vMap {
		return nil
	}
	if v.index != nil {
		if i, ok := v.index[key]; ok {
			return v.vals[i]
		}
		return nil
	}
	for i, k := range v.keys {
		if k == key {
			return v.vals[i]
		}
	}
	return nil
}

// set adds or replaces key in a map.
func (v *value) set(key string, val *value) {
	for i, k := range v.keys {
		if k == key {
			v.vals[i] = val
			return
		}
	}
	v.keys = append(v.keys, key)
	v.vals = append(v.vals, val)
	if v.index != nil {
		v.index[key] = len(v.keys) - 1
	}
}

func (v *value) has(key string) bool {
	if v.index != nil {
		_, ok := v.index[key]
		return ok
	}
	for _, k := range v.keys {
		if k == key {
			return true
		}
	}
	return false
}

// --- YAML -> value ---------------------------------------------------------

type yamlConverter struct {
	offset int // added to node lines (0-based line of the chunk start)
	nodes  int
}

func (c *yamlConverter) convert(n *yaml.Node, depth int) (*value, error) {
	c.nodes++
	if c.nodes > maxNodes {
		return nil, lineError{c.offset + n.Line, errors.New("document too large (too many values, or aliases that expand too much)")}
	}
	if depth > maxDepth {
		return nil, lineError{c.offset + n.Line, errors.New("document nested too deeply")}
	}
	line := 0
	if n.Line > 0 {
		line = c.offset + n.Line
	}
	switch n.Kind {
	case yaml.DocumentNode:
		if len(n.Content) == 0 {
			return &value{kind: vNull, line: line}, nil
		}
		return c.convert(n.Content[0], depth+1)
	case yaml.AliasNode:
		if n.Alias == nil {
			return nil, lineError{line, errors.New("unknown alias")}
		}
		return c.convert(n.Alias, depth+1)
	case yaml.ScalarNode:
		v := &value{str: n.Value, line: line}
		switch n.ShortTag() {
		case "!!null":
			v.kind = vNull
		case "!!bool":
			v.kind = vBool
			b, err := strconv.ParseBool(strings.ToLower(n.Value))
			if err != nil {
				return nil, lineError{line, fmt.Errorf("invalid boolean %q", n.Value)}
			}
			v.str = strconv.FormatBool(b)
		case "!!int":
			v.kind = vInt
		case "!!float":
			v.kind = vFloat
		default:
			v.kind = vString
		}
		return v, nil
	case yaml.SequenceNode:
		v := &value{kind: vList, line: line}
		for _, item := range n.Content {
			iv, err := c.convert(item, depth+1)
			if err != nil {
				return nil, err
			}
			v.vals = append(v.vals, iv)
		}
		return v, nil
	case yaml.MappingNode:
		v := newMap(line)
		v.index = map[string]int{}
		var merges []*value
		for i := 0; i+1 < len(n.Content); i += 2 {
			kn, vn := n.Content[i], n.Content[i+1]
			if kn.Kind == yaml.AliasNode && kn.Alias != nil {
				kn = kn.Alias
			}
			if kn.Kind != yaml.ScalarNode {
				return nil, lineError{c.offset + kn.Line, errors.New("mapping keys must be scalars")}
			}
			val, err := c.convert(vn, depth+1)
			if err != nil {
				return nil, err
			}
			if kn.ShortTag() == "!!merge" {
				merges = append(merges, val)
				continue
			}
			if v.has(kn.Value) {
				return nil, lineError{c.offset + kn.Line, fmt.Errorf("duplicate key %q", kn.Value)}
			}
			v.set(kn.Value, val)
		}
		// YAML merge keys (<<: *base): explicit keys win over merged ones.
		for _, m := range merges {
			srcs := []*value{m}
			if m.kind == vList {
				srcs = m.vals
			}
			for _, src := range srcs {
				if src.kind != vMap {
					return nil, lineError{src.line, errors.New("a merge key (<<) needs a mapping or a list of mappings")}
				}
				for i, k := range src.keys {
					if !v.has(k) {
						v.set(k, src.vals[i])
					}
				}
			}
		}
		return v, nil
	}
	return &value{kind: vNull, line: line}, nil
}

// --- JSON -> value ---------------------------------------------------------

type jsonReader struct {
	data  []byte
	dec   *json.Decoder
	lines lineIndex
	nodes int
}

func newJSONReader(data []byte) *jsonReader {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	return &jsonReader{data: data, dec: dec, lines: newLineIndex(data)}
}

// lineOfNext returns the line of the next token, skipping whitespace and
// JSON separators after the decoder's current offset.
func (r *jsonReader) lineOfNext() int {
	off := int(r.dec.InputOffset())
	for off < len(r.data) {
		switch r.data[off] {
		case ' ', '\t', '\r', '\n', ',', ':':
			off++
			continue
		}
		break
	}
	return r.lines.line(off)
}

// next reads one top-level value; io.EOF at the end of the stream.
func (r *jsonReader) next() (*value, error) {
	line := r.lineOfNext()
	tok, err := r.dec.Token()
	if err != nil {
		return nil, r.wrap(err, line)
	}
	return r.value(tok, line, 0)
}

func (r *jsonReader) wrap(err error, line int) error {
	if err == io.EOF {
		return err
	}
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return lineError{r.lines.line(int(se.Offset) - 1), fmt.Errorf("invalid JSON: %v", se)}
	}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return lineError{r.lines.line(len(r.data)), errors.New("invalid JSON: unexpected end of input")}
	}
	return lineError{line, fmt.Errorf("invalid JSON: %v", err)}
}

func (r *jsonReader) value(tok json.Token, line, depth int) (*value, error) {
	r.nodes++
	if r.nodes > maxNodes {
		return nil, lineError{line, errors.New("document too large")}
	}
	if depth > maxDepth {
		return nil, lineError{line, errors.New("document nested too deeply")}
	}
	switch t := tok.(type) {
	case nil:
		return &value{kind: vNull, line: line}, nil
	case bool:
		return &value{kind: vBool, str: strconv.FormatBool(t), line: line}, nil
	case json.Number:
		s := string(t)
		if strings.ContainsAny(s, ".eE") {
			return &value{kind: vFloat, str: s, line: line}, nil
		}
		return &value{kind: vInt, str: s, line: line}, nil
	case string:
		return &value{kind: vString, str: t, line: line}, nil
	case json.Delim:
		switch t {
		case '{':
			v := newMap(line)
			v.index = map[string]int{}
			for r.dec.More() {
				kline := r.lineOfNext()
				ktok, err := r.dec.Token()
				if err != nil {
					return nil, r.wrap(unexpectedEOF(err), kline)
				}
				key, ok := ktok.(string)
				if !ok {
					return nil, lineError{kline, errors.New("invalid JSON: object key is not a string")}
				}
				vline := r.lineOfNext()
				vtok, err := r.dec.Token()
				if err != nil {
					return nil, r.wrap(unexpectedEOF(err), vline)
				}
				val, err := r.value(vtok, vline, depth+1)
				if err != nil {
					return nil, err
				}
				if v.has(key) {
					return nil, lineError{kline, fmt.Errorf("duplicate key %q", key)}
				}
				v.set(key, val)
			}
			if _, err := r.dec.Token(); err != nil { // '}'
				return nil, r.wrap(unexpectedEOF(err), r.lineOfNext())
			}
			return v, nil
		case '[':
			v := &value{kind: vList, line: line}
			for r.dec.More() {
				iline := r.lineOfNext()
				itok, err := r.dec.Token()
				if err != nil {
					return nil, r.wrap(unexpectedEOF(err), iline)
				}
				item, err := r.value(itok, iline, depth+1)
				if err != nil {
					return nil, err
				}
				v.vals = append(v.vals, item)
			}
			if _, err := r.dec.Token(); err != nil { // ']'
				return nil, r.wrap(unexpectedEOF(err), r.lineOfNext())
			}
			return v, nil
		}
	}
	return nil, lineError{line, fmt.Errorf("invalid JSON: unexpected %v", tok)}
}

func unexpectedEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// parseJSONValue parses a single JSON document (used for protojson output).
func parseJSONValue(data []byte) (*value, error) {
	r := newJSONReader(data)
	return r.next()
}

// --- value -> YAML / JSON --------------------------------------------------

func (v *value) yamlNode() *yaml.Node {
	switch v.kind {
	case vMap:
		n := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
		for i, k := range v.keys {
			kn := &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: k}
			if k == "<<" || strings.ContainsFunc(k, awkwardRune) || hasTypographicQuote(k) {
				kn.Style = yaml.DoubleQuotedStyle // not a merge key; escaped
			}
			n.Content = append(n.Content, kn, v.vals[i].yamlNode())
		}
		if len(n.Content) == 0 {
			n.Style = yaml.FlowStyle
		}
		return n
	case vList:
		n := &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq"}
		for _, item := range v.vals {
			n.Content = append(n.Content, item.yamlNode())
		}
		if len(n.Content) == 0 {
			n.Style = yaml.FlowStyle
		}
		return n
	case vNull:
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null", Value: "null"}
	case vBool:
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!bool", Value: v.str}
	case vInt:
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!int", Value: v.str}
	case vFloat:
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!float", Value: v.str}
	default:
		n := &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: v.str}
		if hasTypographicQuote(v.str) {
			// Written escaped (see escapeTypographicQuotes), so that the
			// output passes the typographic quote check of apply.
			n.Style = yaml.DoubleQuotedStyle
		} else if strings.Contains(v.str, "\n") {
			// Literal blocks read best, but cannot hold every string
			// faithfully (leading blank lines, carriage returns, ...).
			n.Style = yaml.DoubleQuotedStyle
			if literalSafe(v.str) {
				n.Style = yaml.LiteralStyle
			}
		}
		return n
	}
}

// literalSafe reports whether s survives a YAML literal block unchanged.
func literalSafe(s string) bool {
	if s == "" || s[0] == '\n' || s[0] == ' ' || s[0] == '\t' {
		return false
	}
	for _, r := range s {
		if r != '\n' && awkwardRune(r) {
			return false
		}
	}
	for _, line := range strings.Split(s, "\n") {
		if strings.HasSuffix(line, " ") {
			return false
		}
	}
	return true
}

func hasTypographicQuote(s string) bool {
	return strings.ContainsFunc(s, func(r rune) bool { _, ok := typographicQuotes[r]; return ok })
}

// escapeTypographicQuotes replaces typographic quotes in rendered JSON or
// YAML by \uXXXX escapes. It is only correct where every such quote is
// inside a JSON string or a double-quoted YAML scalar, as yamlNode and
// writeJSON arrange.
func escapeTypographicQuotes(data []byte) []byte {
	if !hasTypographicQuote(string(data)) {
		return data
	}
	var b strings.Builder
	for _, r := range string(data) {
		if _, ok := typographicQuotes[r]; ok {
			fmt.Fprintf(&b, "\\u%04X", r)
			continue
		}
		b.WriteRune(r)
	}
	return []byte(b.String())
}

// awkwardRune reports runes that YAML output should only hold escaped.
func awkwardRune(r rune) bool {
	return r < 0x20 || (r >= 0x7f && r <= 0x9f) || r == 0x2028 || r == 0x2029 || r == 0xFEFF
}

// writeJSON writes v as compact JSON (without HTML escaping).
func (v *value) writeJSON(buf *bytes.Buffer) {
	switch v.kind {
	case vMap:
		buf.WriteByte('{')
		for i, k := range v.keys {
			if i > 0 {
				buf.WriteByte(',')
			}
			writeJSONString(buf, k)
			buf.WriteByte(':')
			v.vals[i].writeJSON(buf)
		}
		buf.WriteByte('}')
	case vList:
		buf.WriteByte('[')
		for i, item := range v.vals {
			if i > 0 {
				buf.WriteByte(',')
			}
			item.writeJSON(buf)
		}
		buf.WriteByte(']')
	case vNull:
		buf.WriteString("null")
	case vBool, vInt, vFloat:
		buf.WriteString(v.str)
	default:
		writeJSONString(buf, v.str)
	}
}

func writeJSONString(buf *bytes.Buffer, s string) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s) // encoding a string cannot fail
	buf.Write(bytes.TrimRight(b.Bytes(), "\n"))
}

// --- lines -------------------------------------------------------------------

// lineIndex maps byte offsets to 1-based line numbers.
type lineIndex []int // offsets of line starts

func newLineIndex(data []byte) lineIndex {
	idx := lineIndex{0}
	for i, b := range data {
		if b == '\n' {
			idx = append(idx, i+1)
		}
	}
	return idx
}

func (l lineIndex) line(off int) int {
	if off < 0 {
		off = 0
	}
	return sort.Search(len(l), func(i int) bool { return l[i] > off })
}

// lineError is an error at a line of the input being parsed.
type lineError struct {
	line int
	err  error
}

func (e lineError) Error() string { return e.err.Error() }
func (e lineError) Unwrap() error { return e.err }
