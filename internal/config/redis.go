package config

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

// Redis is where --redis points: a client's options for a redis:// or
// rediss:// URL, or the Sentinel form's; neither for the in-process Redis.
type Redis struct {
	URL      string
	Options  *redis.Options
	Failover *redis.FailoverOptions
}

// InProcess tells that no --redis was given.
func (r Redis) InProcess() bool { return r.Options == nil && r.Failover == nil }

// Client is a new client of r (not connected yet); nil when r is the
// in-process Redis.
func (r Redis) Client() redis.UniversalClient {
	switch {
	case r.Failover != nil:
		return redis.NewFailoverClient(r.Failover)
	case r.Options != nil:
		return redis.NewClient(r.Options)
	}
	return nil
}

// Redacted is r's URL without its credentials, for logs and errors.
func (r Redis) Redacted() string { return redactURL(r.URL) }

// ParseRedis reads a --redis value: a redis:// or rediss:// URL, or the
// Sentinel form redis+sentinel://[:password@]host:port[,host:port…]/master[/db];
// empty is the in-process Redis. Errors name the flag and hide the
// credentials.
func ParseRedis(raw string) (Redis, error) {
	r := Redis{URL: raw}
	if raw == "" {
		return r, nil
	}
	// redis-sentinel:// is docs/design.md's spelling; redis+sentinel:// the
	// one other Redis clients use. Both are accepted.
	rest, ok := strings.CutPrefix(raw, "redis+sentinel://")
	if !ok {
		rest, ok = strings.CutPrefix(raw, "redis-sentinel://")
	}
	var err error
	if ok {
		r.Failover, err = parseSentinel(rest)
	} else {
		r.Options, err = redis.ParseURL(raw)
	}
	if err != nil {
		return r, flagErr("redis", redactErr(err, raw))
	}
	return r, nil
}

// parseSentinel reads [:password@]host:port[,host:port…]/master[/db].
func parseSentinel(s string) (*redis.FailoverOptions, error) {
	opt := &redis.FailoverOptions{}
	if at := strings.LastIndex(s, "@"); at >= 0 {
		cred := s[:at]
		s = s[at+1:]
		user, pass, ok := strings.Cut(cred, ":")
		if !ok {
			pass, user = user, ""
		}
		opt.Username, opt.Password = user, pass
	}
	hosts, path, ok := strings.Cut(s, "/")
	if !ok || hosts == "" {
		return nil, errors.New("sentinel form: redis+sentinel://[:password@]host:port[,host:port…]/master[/db]")
	}
	opt.SentinelAddrs = strings.Split(hosts, ",")
	master, db, _ := strings.Cut(path, "/")
	if master == "" {
		return nil, errors.New("sentinel form needs the master name")
	}
	opt.MasterName = master
	if db != "" {
		n, err := strconv.Atoi(db)
		if err != nil {
			return nil, fmt.Errorf("sentinel db %q is not a number", db)
		}
		opt.DB = n
	}
	return opt, nil
}

// redactURL hides the credentials of a Redis URL (the user information
// before the last @ of its authority), for logs and errors.
func redactURL(raw string) string {
	j := strings.Index(raw, "://")
	if j < 0 {
		if i := strings.LastIndex(raw, "@"); i >= 0 {
			return "…@" + raw[i+1:]
		}
		return raw
	}
	rest := raw[j+3:]
	end := len(rest)
	if k := strings.IndexAny(rest, "/?#"); k >= 0 {
		end = k
	}
	if i := strings.LastIndex(rest[:end], "@"); i >= 0 {
		return raw[:j+3] + "…@" + rest[i+1:]
	}
	if i := strings.LastIndex(rest, "@"); i >= 0 { // an @ in a malformed URL's path: hide all before it
		return raw[:j+3] + "…@" + rest[i+1:]
	}
	return raw
}

// redactErr is err with every copy of raw in its text replaced by the
// redacted URL: parse errors quote the URL they could not parse, password
// included.
func redactErr(err error, raw string) error {
	msg := err.Error()
	safe := redactURL(raw)
	if safe == raw {
		return err
	}
	msg = strings.ReplaceAll(msg, raw, safe)
	// A password can also appear alone (the user information split off).
	if user := credentials(raw); user != "" {
		msg = strings.ReplaceAll(msg, user, "…")
	}
	return errors.New(msg)
}

// credentials returns the user information of a URL-like string, "" when
// there is none.
func credentials(raw string) string {
	rest := raw
	if j := strings.Index(raw, "://"); j >= 0 {
		rest = raw[j+3:]
	}
	if i := strings.LastIndex(rest, "@"); i >= 0 {
		return rest[:i]
	}
	return ""
}
