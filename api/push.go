package api

import (
	"net/http"

	"github.com/gin-gonic/gin"

	"storekeeper/jobs"
)

// Web Push: the dashboard page subscribes its browser with the
// deployment's VAPID public key; workers then push every notification to
// it, as to a webhook. The answer shapes are in openapi_schema.go.

// pushKey answers {"public_key": "<base64url>"}, the applicationServerKey
// for PushManager.subscribe. The first caller in the deployment, API or
// worker, makes the key pair.
func (s *Server) pushKey(c *gin.Context) {
	k, err := jobs.VAPID(c, s.rdb)
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, pushKeyAnswer{PublicKey: k.Public})
}

// subscribePush keeps a browser's PushSubscription JSON and answers 201
// {"id"}; subscribing the same endpoint again replaces it.
func (s *Server) subscribePush(c *gin.Context) {
	var sub jobs.PushSubscription
	if err := decodeBody(c, &sub); err != nil {
		s.fail(c, err)
		return
	}
	rec, err := jobs.Subscribe(c, s.rdb, sub, actor(c))
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusCreated, pushSubscribed{ID: rec.ID})
}

// unsubscribePush forgets the subscription of the endpoint given as
// {"endpoint"} or ?endpoint=.
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
	id, err := jobs.Unsubscribe(c, s.rdb, b.Endpoint)
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, pushUnsubscribed{ID: id, Deleted: true})
}
