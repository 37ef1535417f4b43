package api

import (
	"errors"
	"net/http"
	"slices"

	"github.com/gin-gonic/gin"

	"storekeeper/internal/netguard"
	"storekeeper/jobs"
	"storekeeper/jobsdb"
)

// Web Push: the dashboard page subscribes its browser with the
// deployment's VAPID public key; workers then push every notification to
// it, as to a webhook. The answer shapes are in openapi_schema.go.
//
// A subscription is its token's: keyed by the token's name and the
// endpoint, at most Config.PushSubscriptionsPerToken per token, removed
// only by that token or an operator. Its endpoint must be https to a host
// with public addresses only unless Config.PushAllowPrivate.

// PushResolver resolves push endpoint hosts (Config.PushResolver);
// *net.Resolver is one.
type PushResolver = netguard.Resolver

// pushEndpointRefused is the code of a 400 for an endpoint the address
// policy refuses.
const pushEndpointRefused = "push_endpoint_refused"

// pushKey answers {"public_key": "<base64url>"}, the applicationServerKey
// for PushManager.subscribe. The first caller in the deployment, API or
// worker, makes the key pair.
func (s *Server) pushKey(c *gin.Context) {
	k, err := jobsdb.VAPID(c, s.rdb)
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, pushKeyAnswer{PublicKey: k.Public})
}

// subscribePush keeps a browser's PushSubscription JSON as the caller's
// token's and answers 201 {"id"}; the same token subscribing the same
// endpoint again replaces it. 400 push_endpoint_refused for an endpoint
// that is not https to a public host; 409 too_many_subscriptions past the
// token's bound.
func (s *Server) subscribePush(c *gin.Context) {
	var sub jobs.PushSubscription
	if err := decodeBody(c, &sub); err != nil {
		s.fail(c, err)
		return
	}
	rec, err := jobsdb.Subscribe(c, s.rdb, sub, actor(c), jobs.SubscribeOptions{
		Policy:   netguard.Policy{AllowPrivate: s.cfg.PushAllowPrivate, Resolver: s.cfg.PushResolver},
		PerToken: s.cfg.PushSubscriptionsPerToken,
	})
	if errors.Is(err, jobs.ErrEndpointRefused) {
		err = newError(http.StatusBadRequest, pushEndpointRefused, err.Error())
	}
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusCreated, pushSubscribed{ID: rec.ID})
}

// unsubscribePush forgets the caller's subscription of the endpoint given
// as {"endpoint"} or ?endpoint=. Another token's subscription of it is
// 404, as if there were none: ownership is part of the key, and a 403
// would tell a viewer which endpoints others subscribed. An operator's
// unsubscribe forgets every token's subscription of the endpoint; the
// answer's id is the operator's own when there was one.
func (s *Server) unsubscribePush(c *gin.Context) {
	var b pushUnsubscribeBody
	if err := decodeBody(c, &b); err != nil {
		s.fail(c, err)
		return
	}
	if q, ok := c.GetQuery("endpoint"); ok {
		if b.Endpoint != "" && b.Endpoint != q {
			s.fail(c, invalid("the body and the query name different endpoints"))
			return
		}
		b.Endpoint = q
	}
	if b.Endpoint == "" {
		s.fail(c, invalid("endpoint is required: body {\"endpoint\"} or ?endpoint="))
		return
	}
	owner := actor(c)
	if !s.isOperator(owner) {
		id, err := jobsdb.Unsubscribe(c, s.rdb, owner, b.Endpoint)
		if err != nil {
			s.fail(c, err)
			return
		}
		c.JSON(http.StatusOK, pushUnsubscribed{ID: id, Deleted: true})
		return
	}
	ids, err := jobsdb.UnsubscribeEndpoint(c, s.rdb, b.Endpoint)
	if err != nil {
		s.fail(c, err)
		return
	}
	id := ids[0]
	if own := jobs.PushSubscriptionID(owner, b.Endpoint); slices.Contains(ids, own) {
		id = own
	}
	c.JSON(http.StatusOK, pushUnsubscribed{ID: id, Deleted: true})
}

// isOperator reports whether the token named name is an operator's.
func (s *Server) isOperator(name string) bool {
	for _, t := range s.tokens {
		if t.Name == name {
			return t.Role == RoleOperator
		}
	}
	return false
}
