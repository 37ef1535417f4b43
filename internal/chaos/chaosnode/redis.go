package main

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

// redisClient is a client of what --redis names, in the two forms
// storekeeper's --redis takes: redis:// or rediss:// (redis.ParseURL), and
// Sentinel's redis+sentinel:// (or redis-sentinel://)
// [:password@]host:port[,host:port…]/master[/db]. It is a copy of
// internal/config's unexported parser, limited to those forms (no
// in-process Redis): the chaos node does not link the flag package of
// storekeeper's commands.
func redisClient(raw string) (redis.UniversalClient, error) {
	rest, ok := strings.CutPrefix(raw, "redis+sentinel://")
	if !ok {
		rest, ok = strings.CutPrefix(raw, "redis-sentinel://")
	}
	if !ok {
		opt, err := redis.ParseURL(raw)
		if err != nil {
			return nil, err
		}
		return redis.NewClient(opt), nil
	}
	opt, err := parseSentinel(rest)
	if err != nil {
		return nil, err
	}
	return redis.NewFailoverClient(opt), nil
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
