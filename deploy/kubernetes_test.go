package deploy

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// k8s objects, as far as the checks read them.
type k8sObject struct {
	Kind     string `yaml:"kind"`
	Metadata struct {
		Name string `yaml:"name"`
	} `yaml:"metadata"`
	Spec struct {
		Replicas             *int       `yaml:"replicas"`
		VolumeClaimTemplates []k8sClaim `yaml:"volumeClaimTemplates"`
		Template             struct {
			Spec k8sPodSpec `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
	StringData map[string]string `yaml:"stringData"`
	Data       map[string]string `yaml:"data"`
}

type k8sClaim struct {
	Metadata struct {
		Name string `yaml:"name"`
	} `yaml:"metadata"`
}

type k8sPodSpec struct {
	Containers []k8sContainer `yaml:"containers"`
	Volumes    []struct {
		Name   string `yaml:"name"`
		Secret *struct {
			SecretName string `yaml:"secretName"`
			Items      []struct {
				Key  string `yaml:"key"`
				Path string `yaml:"path"`
			} `yaml:"items"`
		} `yaml:"secret"`
	} `yaml:"volumes"`
}

type k8sProbe struct {
	HTTPGet *struct {
		Path string `yaml:"path"`
		Port any    `yaml:"port"`
	} `yaml:"httpGet"`
}

type k8sContainer struct {
	Name    string   `yaml:"name"`
	Image   string   `yaml:"image"`
	Command []string `yaml:"command"`
	Args    []string `yaml:"args"`
	EnvFrom []any    `yaml:"envFrom"`
	Env     []struct {
		Name      string `yaml:"name"`
		Value     string `yaml:"value"`
		ValueFrom *struct {
			SecretKeyRef *struct {
				Name     string `yaml:"name"`
				Key      string `yaml:"key"`
				Optional bool   `yaml:"optional"`
			} `yaml:"secretKeyRef"`
			FieldRef *struct {
				FieldPath string `yaml:"fieldPath"`
			} `yaml:"fieldRef"`
		} `yaml:"valueFrom"`
	} `yaml:"env"`
	Ports []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
	} `yaml:"ports"`
	VolumeMounts []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
	} `yaml:"volumeMounts"`
	LivenessProbe  *k8sProbe `yaml:"livenessProbe"`
	ReadinessProbe *k8sProbe `yaml:"readinessProbe"`
}

func TestKubernetes(t *testing.T) {
	dir := filepath.Join(root, "deploy/kubernetes")
	files, _ := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if len(files) == 0 {
		t.Fatal("no deploy/kubernetes/*.yaml")
	}
	type located struct {
		where string
		obj   k8sObject
	}
	var objs []located
	var resources []string
	for _, f := range files {
		rel := "deploy/kubernetes/" + filepath.Base(f)
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if filepath.Base(f) == "kustomization.yaml" {
			var k struct {
				Resources []string `yaml:"resources"`
			}
			if err := yaml.Unmarshal(b, &k); err != nil {
				t.Fatalf("%s: %v", rel, err)
			}
			resources = k.Resources
			continue
		}
		dec := yaml.NewDecoder(bytes.NewReader(b))
		for i := 0; ; i++ {
			var o k8sObject
			err := dec.Decode(&o)
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("%s: document %d: %v", rel, i, err)
			}
			if o.Kind == "" || o.Metadata.Name == "" {
				t.Errorf("%s: document %d has no kind or name", rel, i)
			}
			objs = append(objs, located{fmt.Sprintf("%s: %s %s", rel, o.Kind, o.Metadata.Name), o})
		}
	}
	for _, f := range files {
		if base := filepath.Base(f); base != "kustomization.yaml" && !slices.Contains(resources, base) {
			t.Errorf("deploy/kubernetes/%s is not in kustomization.yaml's resources", base)
		}
	}
	for _, r := range resources {
		if _, err := os.Stat(filepath.Join(dir, r)); err != nil {
			t.Errorf("kustomization.yaml: resource %s: %v", r, err)
		}
	}

	secrets := map[string]map[string]bool{}
	for _, o := range objs {
		if o.obj.Kind == "Secret" {
			keys := map[string]bool{}
			for k := range o.obj.StringData {
				keys[k] = true
			}
			for k := range o.obj.Data {
				keys[k] = true
			}
			secrets[o.obj.Metadata.Name] = keys
		}
	}
	img := parseDockerfile(t)
	var nodes []workerNode
	var modes []string
	for _, o := range objs {
		if o.obj.Kind != "Deployment" && o.obj.Kind != "StatefulSet" {
			continue
		}
		pod := o.obj.Spec.Template.Spec
		podName := o.obj.Metadata.Name + "-0"
		if o.obj.Kind == "Deployment" {
			podName = o.obj.Metadata.Name + "-5d4f8b6c7-x2x7q"
		}
		for _, ctr := range pod.Containers {
			where := o.where + " container " + ctr.Name
			// Variables: $(VAR) must name one defined before it.
			vars := map[string]string{}
			expand := func(s string) string {
				return regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`).ReplaceAllStringFunc(s, func(m string) string {
					v, ok := vars[m[2:len(m)-1]]
					if !ok {
						t.Errorf("%s: %s names a variable not defined before it", where, m)
					}
					return v
				})
			}
			env := map[string]string{}
			for _, e := range ctr.Env {
				v := expand(e.Value)
				if vf := e.ValueFrom; vf != nil {
					switch {
					case vf.FieldRef != nil && vf.FieldRef.FieldPath == "metadata.name":
						v = podName
					case vf.FieldRef != nil:
						v = "field-" + vf.FieldRef.FieldPath
					case vf.SecretKeyRef != nil:
						ref := vf.SecretKeyRef
						if !secrets[ref.Name][ref.Key] && !ref.Optional {
							t.Errorf("%s: env %s: no key %q in a Secret %q of these manifests", where, e.Name, ref.Key, ref.Name)
						}
						v = "secret-" + ref.Key
						if e.Name == "STOREKEEPER_WEBHOOK" {
							v = "https://hooks.example.com/x#secret"
						}
					}
				}
				vars[e.Name], env[e.Name] = v, v
			}
			argv := slices.Concat(ctr.Command, ctr.Args)
			if len(ctr.Command) == 0 {
				argv = slices.Concat(img.entrypoint, ctr.Args)
				if len(ctr.Args) == 0 {
					argv = slices.Concat(img.entrypoint, img.cmd)
				}
			}
			for i := range argv {
				argv[i] = expand(argv[i])
			}
			if !strings.HasPrefix(path.Base(ctr.Image), "storekeeper") {
				continue
			}
			if len(argv) < 2 || !isStorekeeper(argv[0]) {
				t.Errorf("%s: runs %q: want storekeeper and a mode", where, argv)
				continue
			}
			if len(ctr.EnvFrom) > 0 {
				t.Errorf("%s: envFrom: this test cannot check the variables it sets", where)
			}
			l := launch{where: where, mode: argv[1], args: argv[2:], env: env, image: img.env}
			c := checkLaunch(t, l)
			if c == nil {
				continue
			}
			modes = append(modes, l.mode)
			requireTokens(t, l, c)
			mounts := map[string]string{} // mount path → volume name
			for _, m := range ctr.VolumeMounts {
				mounts[m.MountPath] = m.Name
			}
			if file, ok := strings.CutPrefix(c.Tokens, "@"); ok {
				found := false
				for _, v := range pod.Volumes {
					if v.Secret == nil || mounts[path.Dir(file)] != v.Name {
						continue
					}
					keys := secrets[v.Secret.SecretName]
					if len(v.Secret.Items) == 0 {
						found = keys[path.Base(file)]
					}
					for _, it := range v.Secret.Items {
						found = found || (it.Path == path.Base(file) && keys[it.Key])
					}
				}
				if !found {
					t.Errorf("%s: --tokens %s: no key of a Secret is mounted there", where, c.Tokens)
				}
			}
			ports := map[string]int{}
			for _, p := range ctr.Ports {
				ports[p.Name] = p.ContainerPort
			}
			for _, p := range []struct {
				name, path string
				probe      *k8sProbe
			}{{"livenessProbe", "/healthz", ctr.LivenessProbe}, {"readinessProbe", "/readyz", ctr.ReadinessProbe}} {
				if p.probe == nil || p.probe.HTTPGet == nil || p.probe.HTTPGet.Path != p.path {
					t.Errorf("%s: %s: want an httpGet of %s", where, p.name, p.path)
					continue
				}
				port := fmt.Sprint(p.probe.HTTPGet.Port)
				if n, ok := ports[port]; ok {
					port = strconv.Itoa(n)
				}
				if port != listenPort(c) {
					t.Errorf("%s: %s on port %s, but storekeeper listens on %s", where, p.name, port, c.Listen)
				}
			}
			if l.mode == "api" {
				continue
			}
			if o.obj.Kind != "StatefulSet" || o.obj.Spec.Replicas == nil || *o.obj.Spec.Replicas != 1 {
				t.Errorf("%s: a worker owns its data dir alone: want a StatefulSet with replicas: 1", where)
			}
			n := workerNode{where: where, node: c.Node, stores: storeList(c)}
			for _, d := range []string{c.DataDir, c.BackupDir} {
				vol, ok := mounts[d]
				if !ok || !slices.ContainsFunc(o.obj.Spec.VolumeClaimTemplates, func(v k8sClaim) bool { return v.Metadata.Name == vol }) {
					t.Errorf("%s: %s is not on a volume from a volumeClaimTemplate", where, d)
				}
				n.volumes = append(n.volumes, o.obj.Metadata.Name+"/"+vol)
			}
			nodes = append(nodes, n)
		}
	}
	if !slices.Contains(modes, "api") || !slices.Contains(modes, "worker") {
		t.Errorf("storekeeper modes run: %q; want api and worker", modes)
	}
	checkNodes(t, nodes)
}
