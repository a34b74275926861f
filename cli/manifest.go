package cli

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"gopkg.in/yaml.v3"

	portalv1 "github.com/portal-lb/portal/proto/portal/v1"
)

// Kinds of objects a manifest may hold.
const (
	KindService   = "Service"
	KindEndpoints = "Endpoints"
	KindList      = "List"
)

// Object is one Service or Endpoints read from a manifest.
type Object struct {
	// Kind is KindService or KindEndpoints; exactly one of Service and
	// Endpoints is set accordingly. Status is never filled from a manifest.
	Kind      string
	Service   *portalv1.Service
	Endpoints *portalv1.Endpoints

	// Source is the file name the object came from ("<stdin>" for -).
	Source string
	// Document is the 1-based index of the (non-empty) document in Source.
	Document int
	// Line is the 1-based line where the object starts in Source.
	Line int
	// IgnoredFields lists, once each, the paths of fields portal does not
	// know that were dropped (e.g. "spec.ipFamilies",
	// "spec.ports[].appProtocol").
	IgnoredFields []string
}

// Metadata returns the object's metadata, creating it when missing.
func (o *Object) Metadata() *portalv1.ObjectMeta {
	switch {
	case o.Service != nil:
		if o.Service.Metadata == nil {
			o.Service.Metadata = &portalv1.ObjectMeta{}
		}
		return o.Service.Metadata
	case o.Endpoints != nil:
		if o.Endpoints.Metadata == nil {
			o.Endpoints.Metadata = &portalv1.ObjectMeta{}
		}
		return o.Endpoints.Metadata
	}
	return &portalv1.ObjectMeta{}
}

// Name returns metadata.name.
func (o *Object) Name() string { return o.Metadata().GetName() }

// Namespace returns metadata.namespace (possibly empty).
func (o *Object) Namespace() string { return o.Metadata().GetNamespace() }

// Ref returns the kubectl-style reference: "service/web" or "endpoints/web".
func (o *Object) Ref() string { return strings.ToLower(o.Kind) + "/" + o.Name() }

// Message returns the Service or Endpoints as a proto message.
func (o *Object) Message() proto.Message {
	if o.Service != nil {
		return o.Service
	}
	return o.Endpoints
}

// ManifestError is a manifest that cannot be read: it names the file and,
// when known, the line.
type ManifestError struct {
	File string
	Line int
	Err  error
}

func (e *ManifestError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("%s:%d: %v", e.File, e.Line, e.Err)
	}
	return fmt.Sprintf("%s: %v", e.File, e.Err)
}

func (e *ManifestError) Unwrap() error { return e.Err }

// ParseManifests reads Kubernetes v1 Service, Endpoints and List manifests
// from data: YAML (several documents separated by ---), a JSON object, or a
// stream of JSON objects. name is used in messages ("-" reads as "<stdin>").
// Empty documents are skipped. Errors are *ManifestError values.
func ParseManifests(name string, data []byte) ([]Object, error) {
	if name == "-" || name == "" {
		name = "<stdin>"
	}
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf")) // UTF-8 byte order mark
	if line, err := checkText(data); err != nil {
		return nil, &ManifestError{File: name, Line: line, Err: err}
	}
	p := &manifestParser{name: name}
	var docs []*value
	var err error
	if looksLikeJSON(data) {
		docs, err = readJSONStream(data)
		if err != nil {
			// Flow-style YAML also starts with { or [: accept it when it parses.
			if ydocs, yerr := readYAMLStream(data); yerr == nil {
				docs, err = ydocs, nil
			}
		}
	} else {
		docs, err = readYAMLStream(data)
	}
	if err != nil {
		return nil, p.fail(err, 0)
	}
	var objs []Object
	for _, d := range docs {
		if d.kind == vNull {
			continue // empty document
		}
		p.doc++
		got, err := p.document(d)
		if err != nil {
			return nil, err
		}
		objs = append(objs, got...)
	}
	return objs, nil
}

// --- text checks -------------------------------------------------------------

// typographicQuotes maps quotation marks word processors and chat tools put
// in place of ASCII quotes to the ASCII quote to use instead.
var typographicQuotes = map[rune]string{
	'\u2018': "'", // ‘ left single quotation mark
	'\u2019': "'", // ’ right single quotation mark
	'\u201A': "'", // ‚ single low-9 quotation mark
	'\u201B': "'", // ‛ single high-reversed-9 quotation mark
	'\u2032': "'", // ′ prime
	'\u2035': "'", // ‵ reversed prime
	'\u2039': "'", // ‹ single left-pointing angle quotation mark
	'\u203A': "'", // › single right-pointing angle quotation mark
	'\u275B': "'", // ❛
	'\u275C': "'", // ❜
	'\uFF07': "'", // ＇ fullwidth apostrophe
	'\u201C': `"`, // “ left double quotation mark
	'\u201D': `"`, // ” right double quotation mark
	'\u201E': `"`, // „ double low-9 quotation mark
	'\u201F': `"`, // ‟ double high-reversed-9 quotation mark
	'\u2033': `"`, // ″ double prime
	'\u2036': `"`, // ‶ reversed double prime
	'\u00AB': `"`, // « left-pointing double angle quotation mark
	'\u00BB': `"`, // » right-pointing double angle quotation mark
	'\u275D': `"`, // ❝
	'\u275E': `"`, // ❞
	'\u301D': `"`, // 〝
	'\u301E': `"`, // 〞
	'\u301F': `"`, // 〟
	'\uFF02': `"`, // ＂ fullwidth quotation mark
}

// checkText rejects invalid UTF-8 and typographic quotes, naming the line.
func checkText(data []byte) (int, error) {
	line := 1
	for i := 0; i < len(data); {
		r, size := utf8.DecodeRune(data[i:])
		if r == utf8.RuneError && size <= 1 {
			return line, errors.New("invalid UTF-8 (manifests must be UTF-8 text)")
		}
		if r == '\n' {
			line++
		} else if ascii, ok := typographicQuotes[r]; ok {
			return line, fmt.Errorf("typographic quote %c (U+%04X) found; use plain ASCII quotes (%s)", r, r, ascii)
		}
		i += size
	}
	return 0, nil
}

func looksLikeJSON(data []byte) bool {
	trimmed := bytes.TrimLeft(data, " \t\r\n")
	return len(trimmed) > 0 && (trimmed[0] == '{' || trimmed[0] == '[')
}

// --- reading documents -------------------------------------------------------

func readJSONStream(data []byte) ([]*value, error) {
	r := newJSONReader(data)
	var docs []*value
	for {
		v, err := r.next()
		if err == io.EOF {
			return docs, nil
		}
		if err != nil {
			return nil, err
		}
		docs = append(docs, v)
	}
}

var docSeparator = regexp.MustCompile(`^---([ \t].*)?$`)

// readYAMLStream splits data on "---" lines (as kubectl does) and decodes
// every chunk, so that errors can be placed even when the YAML library does
// not report a line.
func readYAMLStream(data []byte) ([]*value, error) {
	lines := bytes.SplitAfter(data, []byte("\n"))
	total := bytes.Count(data, []byte("\n"))
	if len(data) > 0 && data[len(data)-1] != '\n' {
		total++
	}
	var docs []*value
	start := 0 // 0-based line of the chunk start
	for i := 0; i <= len(lines); i++ {
		if i < len(lines) {
			l := strings.TrimRight(string(lines[i]), "\r\n")
			if !docSeparator.MatchString(l) || i == start {
				continue
			}
		}
		chunk := bytes.Join(lines[start:i], nil)
		got, err := decodeYAMLChunk(chunk, start, total)
		if err != nil {
			return nil, err
		}
		docs = append(docs, got...)
		start = i
	}
	return docs, nil
}

var unknownAnchorRE = regexp.MustCompile(`^unknown anchor '(.*)' referenced$`)

var yamlLineRE = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// Parser (as opposed to scanner) errors of gopkg.in/yaml.v3 report 0-based
// lines; scanner errors report 1-based ones.
var yamlParserErrors = []string{
	"did not find expected <document start>",
	"did not find expected node content",
	"did not find expected key",
	"did not find expected '-' indicator",
	"did not find expected ',' or ']'",
	"did not find expected ',' or '}'",
}

func decodeYAMLChunk(chunk []byte, offset, totalLines int) (docs []*value, err error) {
	defer func() {
		// Never let a malformed input crash the client.
		if r := recover(); r != nil {
			docs, err = nil, lineError{offset + 1, fmt.Errorf("invalid YAML: %v", r)}
		}
	}()
	nodes, err := decodeYAMLNodes(chunk)
	if err != nil {
		return nil, yamlError(chunk, err, offset, totalLines)
	}
	conv := &yamlConverter{offset: offset}
	for _, n := range nodes {
		v, err := conv.convert(n, 0)
		if err != nil {
			return nil, err
		}
		docs = append(docs, v)
	}
	return docs, nil
}

func decodeYAMLNodes(data []byte) ([]*yaml.Node, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var nodes []*yaml.Node
	for {
		n := new(yaml.Node)
		err := dec.Decode(n)
		if err == io.EOF {
			return nodes, nil
		}
		if err != nil {
			return nil, err
		}
		nodes = append(nodes, n)
	}
}

// yamlError places a YAML syntax error on an absolute line. Scanner errors
// of gopkg.in/yaml.v3 carry a 1-based line (none on the first line); parser
// errors carry the 0-based line where the enclosing construct starts, so for
// those the first prefix of the chunk that fails the same way is searched.
func yamlError(chunk []byte, err error, offset, totalLines int) error {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	rel := 0 // 0-based line within the chunk
	if m := yamlLineRE.FindStringSubmatch(err.Error()); m != nil {
		n, _ := strconv.Atoi(m[1])
		msg = m[2]
		rel = n - 1
		for _, pe := range yamlParserErrors {
			if msg == pe {
				rel = n
				break
			}
		}
	}
	for _, pe := range yamlParserErrors {
		if msg == pe {
			if r, ok := firstFailingPrefix(chunk, msg, rel); ok {
				rel = r
			}
			break
		}
	}
	if m := unknownAnchorRE.FindStringSubmatch(msg); m != nil {
		if i := bytes.Index(chunk, []byte("*"+m[1])); i >= 0 {
			rel = bytes.Count(chunk[:i], []byte("\n"))
		}
	}
	line := offset + rel + 1
	if line > totalLines {
		line = totalLines
	}
	if line < 1 {
		line = 1
	}
	return lineError{line, fmt.Errorf("invalid YAML: %s", msg)}
}

// firstFailingPrefix returns the 0-based index of the last line of the
// shortest line prefix of chunk, ending at or after line from, whose parse
// fails with msg. It gives up on huge chunks and after a time budget.
func firstFailingPrefix(chunk []byte, msg string, from int) (int, bool) {
	lines := bytes.SplitAfter(chunk, []byte("\n"))
	if len(lines) > 5000 || len(chunk) > 1<<20 {
		return 0, false
	}
	deadline := time.Now().Add(500 * time.Millisecond)
	for k := max(from+1, 1); k < len(lines); k++ {
		if time.Now().After(deadline) {
			return 0, false
		}
		_, err := decodeYAMLNodes(bytes.Join(lines[:k], nil))
		if err == nil {
			continue
		}
		got := strings.TrimPrefix(err.Error(), "yaml: ")
		if m := yamlLineRE.FindStringSubmatch(err.Error()); m != nil {
			got = m[2]
		}
		if got == msg {
			return k - 1, true
		}
	}
	return 0, false
}

// --- documents -> objects ----------------------------------------------------

type manifestParser struct {
	name string
	doc  int
}

func (p *manifestParser) fail(err error, line int) error {
	var le lineError
	if errors.As(err, &le) {
		if le.line > 0 {
			line = le.line
		}
		err = le.err
	}
	return &ManifestError{File: p.name, Line: line, Err: err}
}

func (p *manifestParser) document(v *value) ([]Object, error) {
	if v.kind != vMap {
		return nil, p.fail(fmt.Errorf("document %d: expected an object (a Service, Endpoints or List), got %s", p.doc, v.kind), v.line)
	}
	kind, err := p.kindOf(v, fmt.Sprintf("document %d", p.doc))
	if err != nil {
		return nil, err
	}
	if kind != KindList {
		obj, err := p.object(v, kind, fmt.Sprintf("document %d", p.doc))
		if err != nil {
			return nil, err
		}
		return []Object{obj}, nil
	}
	items := v.get("items")
	if items == nil || items.kind == vNull {
		return nil, nil
	}
	if items.kind != vList {
		return nil, p.fail(fmt.Errorf("document %d: items: expected a list, got %s", p.doc, items.kind), items.line)
	}
	var objs []Object
	for i, item := range items.vals {
		where := fmt.Sprintf("document %d: items[%d]", p.doc, i)
		if item.kind != vMap {
			return nil, p.fail(fmt.Errorf("%s: expected an object, got %s", where, item.kind), item.line)
		}
		kind, err := p.kindOf(item, where)
		if err != nil {
			return nil, err
		}
		if kind == KindList {
			return nil, p.fail(fmt.Errorf("%s: a List cannot contain a List", where), item.line)
		}
		obj, err := p.object(item, kind, where)
		if err != nil {
			return nil, err
		}
		objs = append(objs, obj)
	}
	return objs, nil
}

// kindOf checks apiVersion and returns kind.
func (p *manifestParser) kindOf(v *value, where string) (string, error) {
	if av := v.get("apiVersion"); av != nil && av.kind != vNull {
		if av.kind != vString || (av.str != "v1" && av.str != "") {
			return "", p.fail(fmt.Errorf("%s: unsupported apiVersion %q (portal accepts v1)", where, av.str), av.line)
		}
	}
	k := v.get("kind")
	if k == nil || k.kind == vNull || k.str == "" {
		return "", p.fail(fmt.Errorf("%s: missing kind (portal accepts Service, Endpoints and List)", where), v.line)
	}
	switch {
	case k.kind == vString && (k.str == KindService || k.str == KindEndpoints || k.str == KindList):
		return k.str, nil
	}
	return "", p.fail(fmt.Errorf("%s: unsupported kind %q (portal accepts Service, Endpoints and List)", where, k.str), k.line)
}

func (p *manifestParser) object(v *value, kind, where string) (Object, error) {
	obj := Object{Kind: kind, Source: p.name, Document: p.doc, Line: v.line}
	var msg proto.Message
	if kind == KindService {
		obj.Service = &portalv1.Service{}
		msg = obj.Service
	} else {
		obj.Endpoints = &portalv1.Endpoints{}
		msg = obj.Endpoints
	}
	ref := strings.ToLower(kind)
	if name := v.get("metadata").get("name"); name != nil && name.kind != vMap && name.kind != vList && name.str != "" {
		ref += "/" + name.str
	}

	// apiVersion and kind were checked; status belongs to the server.
	body := newMap(v.line)
	for i, k := range v.keys {
		switch k {
		case "apiVersion", "kind", "status":
			continue
		}
		body.set(k, v.vals[i])
	}
	c := &fieldConverter{}
	out, err := c.message(msg.ProtoReflect().Descriptor(), body, "", "")
	if err != nil {
		var fe *fieldError
		if errors.As(err, &fe) {
			return obj, p.fail(fmt.Errorf("%s: %s: %v", ref, fe.path, fe.err), fe.line)
		}
		return obj, p.fail(fmt.Errorf("%s: %w", ref, err), v.line)
	}
	var buf bytes.Buffer
	if out == nil {
		out = newMap(0)
	}
	out.writeJSON(&buf)
	if err := protojson.Unmarshal(buf.Bytes(), msg); err != nil {
		return obj, p.fail(fmt.Errorf("%s: %v", ref, err), v.line)
	}
	obj.IgnoredFields = c.ignored
	if obj.Name() == "" {
		return obj, p.fail(fmt.Errorf("%s: %s has no metadata.name", where, kind), v.line)
	}
	return obj, nil
}

// --- value -> protojson-shaped value -----------------------------------------

// fieldConverter walks a document against a message descriptor: it drops (and
// records) unknown fields, normalises scalars the way Kubernetes manifests
// write them (targetPort as a number, resourceVersion as a string, null
// timestamps) and reports type mismatches with their line.
type fieldConverter struct {
	ignored []string
	seen    map[string]bool
}

type fieldError struct {
	path string
	line int
	err  error
}

func (e *fieldError) Error() string { return e.path + ": " + e.err.Error() }

func (c *fieldConverter) errorf(path string, v *value, format string, args ...any) error {
	if path == "" {
		path = "(root)"
	}
	return &fieldError{path: path, line: v.line, err: fmt.Errorf(format, args...)}
}

func (c *fieldConverter) ignore(gpath string) {
	if c.seen == nil {
		c.seen = map[string]bool{}
	}
	if !c.seen[gpath] {
		c.seen[gpath] = true
		c.ignored = append(c.ignored, gpath)
	}
}

func joinPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func describeValue(v *value) string {
	switch v.kind {
	case vString:
		return fmt.Sprintf("a string (%q)", v.str)
	case vInt, vFloat:
		if _, err := strconv.ParseFloat(v.str, 64); err != nil {
			return fmt.Sprintf("%q", v.str)
		}
		return fmt.Sprintf("the number %s", v.str)
	case vBool:
		return fmt.Sprintf("the boolean %s", v.str)
	}
	return v.kind.String()
}

// message converts an object; it returns nil for null (the field is omitted).
func (c *fieldConverter) message(md protoreflect.MessageDescriptor, v *value, path, gpath string) (*value, error) {
	if v.kind == vNull {
		return nil, nil
	}
	if v.kind != vMap {
		return nil, c.errorf(path, v, "expected an object, got %s", describeValue(v))
	}
	out := newMap(v.line)
	fields := md.Fields()
	for i, key := range v.keys {
		val := v.vals[i]
		fd := fields.ByJSONName(key)
		if fd == nil {
			fd = fields.ByName(protoreflect.Name(key))
		}
		if fd == nil {
			c.ignore(joinPath(gpath, key))
			continue
		}
		fpath, fgpath := joinPath(path, key), joinPath(gpath, key)
		var conv *value
		var err error
		switch {
		case fd.IsMap():
			conv, err = c.mapField(fd, val, fpath, fgpath)
		case fd.IsList():
			conv, err = c.listField(fd, val, fpath, fgpath)
		default:
			conv, err = c.singular(fd, val, fpath, fgpath)
		}
		if err != nil {
			return nil, err
		}
		if conv != nil {
			out.set(fd.JSONName(), conv)
		}
	}
	return out, nil
}

func (c *fieldConverter) mapField(fd protoreflect.FieldDescriptor, v *value, path, gpath string) (*value, error) {
	if v.kind == vNull {
		return nil, nil
	}
	if v.kind != vMap {
		return nil, c.errorf(path, v, "expected an object, got %s", describeValue(v))
	}
	out := newMap(v.line)
	for i, key := range v.keys {
		val := v.vals[i]
		epath := fmt.Sprintf("%s[%q]", path, key)
		if val.kind == vNull && fd.MapValue().Kind() == protoreflect.StringKind {
			out.set(key, &value{kind: vString})
			continue
		}
		conv, err := c.singular(fd.MapValue(), val, epath, gpath+"[]")
		if err != nil {
			return nil, err
		}
		if conv == nil {
			return nil, c.errorf(epath, val, "null is not allowed here")
		}
		out.set(key, conv)
	}
	return out, nil
}

func (c *fieldConverter) listField(fd protoreflect.FieldDescriptor, v *value, path, gpath string) (*value, error) {
	if v.kind == vNull {
		return nil, nil
	}
	if v.kind != vList {
		return nil, c.errorf(path, v, "expected a list, got %s", describeValue(v))
	}
	out := &value{kind: vList, line: v.line}
	for i, item := range v.vals {
		ipath := fmt.Sprintf("%s[%d]", path, i)
		conv, err := c.singular(fd, item, ipath, gpath+"[]")
		if err != nil {
			return nil, err
		}
		if conv == nil {
			return nil, c.errorf(ipath, item, "null is not allowed in a list")
		}
		out.vals = append(out.vals, conv)
	}
	return out, nil
}

func (c *fieldConverter) singular(fd protoreflect.FieldDescriptor, v *value, path, gpath string) (*value, error) {
	if v.kind == vNull {
		return nil, nil
	}
	switch fd.Kind() {
	case protoreflect.MessageKind, protoreflect.GroupKind:
		if fd.Message().FullName() == "google.protobuf.Timestamp" {
			if v.kind != vString {
				return nil, c.errorf(path, v, "expected a timestamp string, got %s", describeValue(v))
			}
			t, err := time.Parse(time.RFC3339Nano, v.str)
			if err != nil {
				return nil, c.errorf(path, v, "invalid timestamp %q (want RFC 3339, like 2024-01-02T15:04:05Z)", v.str)
			}
			return &value{kind: vString, str: t.UTC().Format(time.RFC3339Nano), line: v.line}, nil
		}
		return c.message(fd.Message(), v, path, gpath)

	case protoreflect.StringKind, protoreflect.BytesKind, protoreflect.EnumKind:
		switch v.kind {
		case vString, vBool, vFloat:
			return &value{kind: vString, str: v.str, line: v.line}, nil
		case vInt:
			// targetPort: 8080 and friends: a number where the proto has a string.
			if neg, mag, err := parseInteger(v.str, true); err == nil {
				s := strconv.FormatUint(mag, 10)
				if neg {
					s = "-" + s
				}
				return &value{kind: vString, str: s, line: v.line}, nil
			}
			return &value{kind: vString, str: v.str, line: v.line}, nil
		}
		return nil, c.errorf(path, v, "expected a string, got %s", describeValue(v))

	case protoreflect.BoolKind:
		switch {
		case v.kind == vBool:
			return &value{kind: vBool, str: v.str, line: v.line}, nil
		case v.kind == vString && (v.str == "true" || v.str == "false"):
			return &value{kind: vBool, str: v.str, line: v.line}, nil
		}
		return nil, c.errorf(path, v, "expected true or false, got %s", describeValue(v))

	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind,
		protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind,
		protoreflect.Uint32Kind, protoreflect.Fixed32Kind,
		protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		var neg bool
		var mag uint64
		var err error
		switch v.kind {
		case vInt:
			neg, mag, err = parseInteger(v.str, true)
		case vString:
			neg, mag, err = parseInteger(strings.TrimSpace(v.str), false)
		default:
			err = errors.New("not an integer")
		}
		if err != nil {
			return nil, c.errorf(path, v, "expected an integer, got %s", describeValue(v))
		}
		var lo int64
		var hi uint64
		switch fd.Kind() {
		case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
			lo, hi = math.MinInt32, math.MaxInt32
		case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
			lo, hi = math.MinInt64, math.MaxInt64
		case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
			lo, hi = 0, math.MaxUint32
		default:
			lo, hi = 0, math.MaxUint64
		}
		if (neg && mag != 0 && (lo == 0 || mag > uint64(-(lo+1))+1)) || (!neg && mag > hi) {
			return nil, c.errorf(path, v, "integer %s out of range", v.str)
		}
		s := strconv.FormatUint(mag, 10)
		if neg && mag != 0 {
			s = "-" + s
		}
		return &value{kind: vInt, str: s, line: v.line}, nil

	case protoreflect.FloatKind, protoreflect.DoubleKind:
		if v.kind != vInt && v.kind != vFloat && v.kind != vString {
			return nil, c.errorf(path, v, "expected a number, got %s", describeValue(v))
		}
		f, err := strconv.ParseFloat(strings.ReplaceAll(v.str, "_", ""), 64)
		if err != nil {
			switch strings.ToLower(v.str) {
			case ".inf", "+.inf":
				f = math.Inf(1)
			case "-.inf":
				f = math.Inf(-1)
			case ".nan":
				f = math.NaN()
			default:
				return nil, c.errorf(path, v, "expected a number, got %s", describeValue(v))
			}
		}
		switch {
		case math.IsInf(f, 1):
			return &value{kind: vString, str: "Infinity"}, nil
		case math.IsInf(f, -1):
			return &value{kind: vString, str: "-Infinity"}, nil
		case math.IsNaN(f):
			return &value{kind: vString, str: "NaN"}, nil
		}
		return &value{kind: vFloat, str: strconv.FormatFloat(f, 'g', -1, 64), line: v.line}, nil
	}
	return nil, c.errorf(path, v, "unsupported field type %v", fd.Kind())
}

// parseInteger parses an optionally signed integer. With prefixes, 0x, 0o and
// 0b forms (YAML) are accepted too.
func parseInteger(s string, prefixes bool) (neg bool, mag uint64, err error) {
	if strings.HasPrefix(s, "-") {
		neg, s = true, s[1:]
	} else {
		s = strings.TrimPrefix(s, "+")
	}
	if s == "" || s[0] == '+' || s[0] == '-' {
		return false, 0, strconv.ErrSyntax
	}
	base := 10
	if prefixes {
		base = 0
	}
	mag, err = strconv.ParseUint(s, base, 64)
	return neg, mag, err
}
