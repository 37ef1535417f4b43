package keyspace

import (
	"fmt"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// The Redis layer's three floors (docs/design.md, "Layout"):
//
//	jobs               the vocabulary: no Redis client, no key
//	internal/keyspace  every key name and Lua script; imports only jobs
//	jobsdb             the operations; what api, jobmetrics and ctl call
//
// Only jobsdb spells keyspace's keys and scripts. worker imports keyspace
// for Change, the guarded write its job steps build, and spells no key
// but asynq's own (pinned in keyspace/asynq.go), in worker/asynqkeys.go.
func TestLayering(t *testing.T) {
	const mod = "storekeeper/"
	spelled := regexp.MustCompile(`\b(jobs|keyspace)\.[A-Za-z]*(Key|Stream|Channel|Script)\b|redis\.NewScript|"storekeeper:[a-z]`)
	// of keyspace; internal/chaos is a checker: it reads Redis behind the
	// API's back to check what the API says; make scale's command is a
	// measuring tool: it writes synthetic stores' keys and weighs keys with
	// MEMORY USAGE.
	importers := []string{"jobsdb", "worker", "internal/chaos", "internal/scale/cmd/scale"}
	var bad []string
	root := filepath.Join("..", "..")
	files := 0
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if n := d.Name(); path != root && (n == "testdata" || n == "node_modules" || strings.HasPrefix(n, ".")) {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		files++
		rel, _ := filepath.Rel(root, path)
		pkg := filepath.ToSlash(filepath.Dir(rel))
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		for _, imp := range f.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			switch {
			case pkg == "jobs" && strings.HasPrefix(p, "github.com/redis/"),
				pkg == "jobs" && strings.HasPrefix(p, mod) && p != mod+"internal/netguard":
				bad = append(bad, fmt.Sprintf("%s: the vocabulary imports %s", rel, p))
			case pkg == "internal/keyspace" && strings.HasPrefix(p, mod) && p != mod+"jobs":
				bad = append(bad, fmt.Sprintf("%s: keyspace imports %s (only jobs)", rel, p))
			case p == mod+"internal/keyspace" && !slices.Contains(importers, pkg):
				bad = append(bad, fmt.Sprintf("%s: imports keyspace; call an operation of jobsdb", rel))
			}
		}
		if pkg == "internal/keyspace" || pkg == "jobsdb" || pkg == "internal/chaos" || pkg == "internal/scale/cmd/scale" || filepath.ToSlash(rel) == "worker/asynqkeys.go" {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for i, line := range strings.Split(string(b), "\n") {
			if m := spelled.FindString(line); m != "" {
				bad = append(bad, fmt.Sprintf("%s:%d: spells %s", rel, i+1, m))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files < 100 {
		t.Fatalf("walked %d Go files from %s: not the module", files, root)
	}
	if len(bad) > 0 {
		t.Errorf("keys and scripts live in internal/keyspace, operations in jobsdb:\n%s", strings.Join(bad, "\n"))
	}
}
