package deploy

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
)

// dockerImage is what the final stage of deploy/Dockerfile sets.
type dockerImage struct {
	entrypoint, cmd []string
	env             map[string]string
	user            string
	expose          []string
}

// parseDockerfile reads the instructions of deploy/Dockerfile this test
// needs. No Dockerfile parser is a dependency of the module (BuildKit's
// would be the kept one) and the file keeps to the simple forms: exec-form
// ENTRYPOINT and CMD, ENV KEY=VALUE.
func parseDockerfile(t *testing.T) dockerImage {
	t.Helper()
	var lines []string
	cont := ""
	for l := range strings.SplitSeq(string(readFile(t, "deploy/Dockerfile")), "\n") {
		l = strings.TrimSpace(l)
		if cont == "" && (l == "" || strings.HasPrefix(l, "#")) {
			continue
		}
		if s, ok := strings.CutSuffix(l, "\\"); ok {
			cont += s + " "
			continue
		}
		lines = append(lines, cont+l)
		cont = ""
	}
	var img dockerImage
	for _, l := range lines {
		instr, rest, _ := strings.Cut(l, " ")
		rest = strings.TrimSpace(rest)
		switch strings.ToUpper(instr) {
		case "FROM": // a new stage: only the last one counts
			img = dockerImage{env: map[string]string{}}
		case "ENTRYPOINT", "CMD":
			var v []string
			if err := json.Unmarshal([]byte(rest), &v); err != nil {
				t.Fatalf("deploy/Dockerfile: %s %s: want the exec (JSON) form: %v", instr, rest, err)
			}
			if strings.EqualFold(instr, "CMD") {
				img.cmd = v
			} else {
				img.entrypoint = v
			}
		case "ENV":
			for _, kv := range strings.Fields(rest) {
				k, v, ok := strings.Cut(kv, "=")
				if !ok {
					t.Fatalf("deploy/Dockerfile: ENV %s: want KEY=VALUE", rest)
				}
				img.env[k] = strings.Trim(v, `"`)
			}
		case "USER":
			img.user = rest
		case "EXPOSE":
			img.expose = strings.Fields(rest)
		}
	}
	return img
}

func TestDockerfile(t *testing.T) {
	img := parseDockerfile(t)
	if len(img.entrypoint) != 1 || !isStorekeeper(img.entrypoint[0]) {
		t.Fatalf("deploy/Dockerfile: ENTRYPOINT %q: want the binary alone", img.entrypoint)
	}
	if len(img.cmd) == 0 {
		t.Fatal("deploy/Dockerfile: no CMD")
	}
	l := launch{where: "deploy/Dockerfile", mode: img.cmd[0], args: img.cmd[1:], env: img.env}
	c := checkLaunch(t, l)
	if c != nil && !slices.Contains(img.expose, listenPort(c)) {
		t.Errorf("deploy/Dockerfile: EXPOSE %q, but storekeeper listens on %s", img.expose, c.Listen)
	}
	if u, _, _ := strings.Cut(img.user, ":"); u == "" || u == "0" || u == "root" {
		t.Errorf("deploy/Dockerfile: USER %q: want a non-root user", img.user)
	}
}
