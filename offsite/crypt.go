package offsite

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"strings"
	"time"

	"filippo.io/age"
	"gocloud.dev/blob"

	"storekeeper/store"
)

// Encryption makes a target hold only ciphertext: every object and every
// manifest is encrypted with age to Recipients before it leaves the
// machine, and objects are named by an HMAC of their content's hash under
// NamingKey, so that names reveal no plaintext hash while identical
// contents (across backups and stores) still share one object. The index
// stays readable: backup ids, times, sizes and file counts, which the
// uploader needs without an identity.
//
// NamingKey is deployment-wide and cannot change (it would rename every
// object). The first node that uploads stores it on the target encrypted
// to the recipients (keys/naming-key.age); a node with an identity can
// recover it from there, and one given another key is refused.
// Identities are needed only by nodes that restore.
type Encryption struct {
	Recipients []age.Recipient
	Identities []age.Identity
	NamingKey  []byte // at least 32 bytes; nil: recovered from the target with Identities
}

// namingKeyKey holds the naming key, encrypted to the recipients.
const namingKeyKey = "keys/naming-key.age"

// ErrIdentity: the target's data cannot be decrypted with the identities
// given (none given, or not one it was encrypted to).
var ErrIdentity = errors.New("no identity that decrypts the target's data")

// ParseNamingKey reads a naming key file's content: at least 32 bytes
// after trimming surrounding white space (e.g. `head -c 32 /dev/urandom |
// base64 > key`).
func ParseNamingKey(b []byte) ([]byte, error) {
	k := bytes.TrimSpace(b)
	if len(k) < 32 {
		return nil, fmt.Errorf("naming key: %d bytes, want at least 32", len(k))
	}
	return k, nil
}

// ParseRecipients reads age recipients (age1…), one per line, # comments
// allowed.
func ParseRecipients(s string) ([]age.Recipient, error) {
	return age.ParseRecipients(strings.NewReader(s))
}

// ParseIdentities reads age identities (AGE-SECRET-KEY-1…), as age-keygen
// writes them.
func ParseIdentities(b []byte) ([]age.Identity, error) {
	return age.ParseIdentities(bytes.NewReader(b))
}

// setupEncryption stores the naming key on the target (create-only), or
// checks it against the one stored there, or recovers it from there.
func (t *Target) setupEncryption(ctx context.Context) error {
	e := t.enc
	if len(e.Recipients) == 0 {
		return errors.New("encryption needs at least one recipient")
	}
	stored, err := t.bucket.ReadAll(ctx, namingKeyKey)
	switch {
	case notFound(err):
		if e.NamingKey == nil {
			return fmt.Errorf("target %s holds no naming key yet: give one (--backup-naming-key)", t.Name)
		}
		ct, err := seal(e.NamingKey, e.Recipients)
		if err != nil {
			return err
		}
		err = t.bucket.WriteAll(ctx, namingKeyKey, ct, &blob.WriterOptions{IfNotExist: true})
		if err == nil {
			return nil
		}
		if !exists(err) {
			return fmt.Errorf("target %s: store the naming key: %w", t.Name, err)
		}
		// Another node stored one meanwhile: check against it.
		if stored, err = t.bucket.ReadAll(ctx, namingKeyKey); err != nil {
			return fmt.Errorf("target %s: read the naming key: %w", t.Name, err)
		}
	case err != nil:
		return fmt.Errorf("target %s: read the naming key: %w", t.Name, err)
	}
	if len(e.Identities) == 0 {
		if e.NamingKey == nil {
			return fmt.Errorf("target %s: %w: the naming key is stored encrypted (give --backup-naming-key or --backup-identity)", t.Name, ErrIdentity)
		}
		return nil // cannot check it without an identity; the key given is used
	}
	key, err := t.open(stored)
	if err != nil {
		return fmt.Errorf("target %s: naming key: %w", t.Name, err)
	}
	if e.NamingKey != nil && !hmac.Equal(key, e.NamingKey) {
		return fmt.Errorf("target %s: the naming key given is not the one the target's objects are named with; it cannot change", t.Name)
	}
	e.NamingKey = key
	return nil
}

// objectName is the key of an object holding content with SHA-256 sum.
func (t *Target) objectName(sum string) string {
	if t.enc == nil {
		return "objects/" + sum
	}
	m := hmac.New(sha256.New, t.enc.NamingKey)
	m.Write([]byte(sum))
	return "objects/" + hex.EncodeToString(m.Sum(nil))
}

func seal(plain []byte, to []age.Recipient) ([]byte, error) {
	var buf bytes.Buffer
	w, err := age.Encrypt(&buf, to...)
	if err != nil {
		return nil, err
	}
	if _, err := w.Write(plain); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// open decrypts b with the target's identities.
func (t *Target) open(b []byte) ([]byte, error) {
	r, err := t.decrypt(bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	return io.ReadAll(r)
}

func (t *Target) decrypt(r io.Reader) (io.Reader, error) {
	if len(t.enc.Identities) == 0 {
		return nil, fmt.Errorf("%w: this node has no --backup-identity", ErrIdentity)
	}
	out, err := age.Decrypt(r, t.enc.Identities...)
	var nomatch *age.NoIdentityMatchError
	if errors.As(err, &nomatch) {
		return nil, fmt.Errorf("%w: it was encrypted to other recipients", ErrIdentity)
	}
	return out, err
}

// sealedManifest is what an encrypted target stores for a manifest, inside
// the age encryption: the manifest and its MAC under the naming key. age
// gives confidentiality, not authenticity: anyone may encrypt to the
// (public) recipients, so whoever can write to the bucket could plant a
// manifest. The MAC, keyed by the secret naming key, lets a restore tell
// a manifest an uploader wrote; the objects it lists are then checked
// against its hashes.
type sealedManifest struct {
	Manifest json.RawMessage `json:"manifest"`
	MAC      string          `json:"mac"`
}

func (t *Target) manifestMAC(b []byte) string {
	m := hmac.New(sha256.New, t.enc.NamingKey)
	m.Write([]byte("storekeeper manifest\x00"))
	m.Write(b)
	return hex.EncodeToString(m.Sum(nil))
}

// sealManifest encrypts a manifest, with its MAC, when the target is
// encrypted.
func (t *Target) sealManifest(b []byte) ([]byte, error) {
	if t.enc == nil {
		return b, nil
	}
	// Compact, as json.Marshal writes a RawMessage: the MAC is over the
	// bytes a reader gets back.
	var c bytes.Buffer
	if err := json.Compact(&c, b); err != nil {
		return nil, err
	}
	wrapped, err := json.Marshal(sealedManifest{Manifest: c.Bytes(), MAC: t.manifestMAC(c.Bytes())})
	if err != nil {
		return nil, err
	}
	return seal(wrapped, t.enc.Recipients)
}

// openManifest decrypts a manifest and checks its MAC when the target is
// encrypted.
func (t *Target) openManifest(b []byte) ([]byte, error) {
	if t.enc == nil {
		return b, nil
	}
	plain, err := t.open(b)
	if err != nil {
		return nil, err
	}
	var w sealedManifest
	if err := json.Unmarshal(plain, &w); err != nil || len(w.Manifest) == 0 {
		return nil, fmt.Errorf("%w: not a sealed manifest", store.ErrBadBackup)
	}
	if !hmac.Equal([]byte(w.MAC), []byte(t.manifestMAC(w.Manifest))) {
		return nil, fmt.Errorf("%w: the manifest's MAC does not match the naming key: it was not written by a node of this deployment", store.ErrBadBackup)
	}
	return w.Manifest, nil
}

// readCloser is a decrypting reader over an object reader.
type readCloser struct {
	io.Reader
	io.Closer
}

// Reencrypted is what one Reencrypt did.
type Reencrypted struct {
	Backups int           `json:"backups"` // manifests rewritten
	Objects int           `json:"objects"` // objects rewritten
	Bytes   int64         `json:"bytes"`   // their plaintext bytes
	Took    time.Duration `json:"took"`
}

// ErrNotEncrypted: Reencrypt on a target without encryption.
var ErrNotEncrypted = errors.New("the target is not encrypted")

// Reencrypt rewrites what the target holds of a store for the current
// recipients, after they changed (new objects are encrypted to the
// current ones already): the naming key, the manifest of every backup in
// the store's index and every object those list. Objects shared with
// other stores are rewritten too: their content, and so their names, stay
// the same, and only who can read them changes. Each object is read with
// this node's identities (ErrIdentity without one) and checked against
// its size and hash while it is encrypted again; it is then replaced
// whole (a reader gets the old object or the new one). One that does not
// match is left as it is, and the error names it.
func (t *Target) Reencrypt(ctx context.Context, storeName string, progress Progress) (Reencrypted, error) {
	start := time.Now()
	var out Reencrypted
	if t.enc == nil {
		return out, fmt.Errorf("target %s: %w", t.Name, ErrNotEncrypted)
	}
	if len(t.enc.Identities) == 0 {
		return out, fmt.Errorf("target %s: %w: reencrypting reads every object (give --backup-identity)", t.Name, ErrIdentity)
	}
	key, err := seal(t.enc.NamingKey, t.enc.Recipients)
	if err != nil {
		return out, err
	}
	if err := t.bucket.WriteAll(ctx, namingKeyKey, key, nil); err != nil {
		return out, fmt.Errorf("target %s: rewrite the naming key: %w", t.Name, err)
	}
	entries, err := t.Backups(ctx, storeName)
	if err != nil {
		return out, err
	}
	var files []store.BackupFile
	seen := map[string]bool{}
	for _, e := range entries {
		m, err := t.Manifest(ctx, storeName, e.ID)
		if err != nil {
			return out, err
		}
		b, err := json.MarshalIndent(m, "", "  ")
		if err != nil {
			return out, err
		}
		if b, err = t.sealManifest(b); err != nil {
			return out, err
		}
		if err := t.bucket.WriteAll(ctx, manifestKey(storeName, m.ID), b, &blob.WriterOptions{ContentType: "application/json"}); err != nil {
			return out, fmt.Errorf("target %s: rewrite manifest %s: %w", t.Name, m.ID, err)
		}
		out.Backups++
		for _, f := range m.Files {
			if !seen[f.SHA256] {
				seen[f.SHA256] = true
				files = append(files, f)
			}
		}
	}
	out.Objects, out.Bytes, err = t.eachObject(ctx, files, progress, t.reseal)
	out.Took = time.Since(start)
	return out, err
}

// reseal replaces object f with its content encrypted to the current
// recipients, unless its content does not match f: then the write is
// abandoned and the old object stays.
func (t *Target) reseal(ctx context.Context, f store.BackupFile) error {
	r, err := t.OpenObject(ctx, f)
	if err != nil {
		return err
	}
	defer r.Close()
	if err := t.send(ctx, f, &checkedReader{r: r, f: f, h: sha256.New()}, true); err != nil {
		return fmt.Errorf("reencrypt: %w", err)
	}
	return nil
}

// checkedReader reads f's content and fails, rather than ending, when
// what it read is not f's size and SHA-256.
type checkedReader struct {
	r io.Reader
	f store.BackupFile
	h hash.Hash
	n int64
}

func (c *checkedReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.h.Write(p[:n])
	c.n += int64(n)
	if err == io.EOF || c.n > c.f.Size {
		if sum := hex.EncodeToString(c.h.Sum(nil)); c.n != c.f.Size || sum != c.f.SHA256 {
			return n, fmt.Errorf("%w: %s holds at least %d bytes with sha256 %s, its manifest says %d bytes; left as it is",
				store.ErrBadBackup, c.f.Name, c.n, sum, c.f.Size)
		}
	}
	return n, err
}
