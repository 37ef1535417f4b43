package api

import (
	"bytes"
	"embed"
	"io/fs"
	"net/http"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
)

// The dashboard page: plain HTML, CSS and JavaScript embedded in the
// binary, so it needs no build step, no CDN and no network at run time. It
// calls the same API as everyone else, with the token the user gives it.
//
//go:embed web
var webFiles embed.FS

func (s *Server) pageRoutes(e *gin.Engine) {
	web, _ := fs.Sub(webFiles, "web")
	index, _ := fs.ReadFile(web, "index.html")
	e.GET("/", func(c *gin.Context) {
		c.Header("Cache-Control", "no-cache")
		pageHeaders(c, dashboardCSP)
		c.Data(http.StatusOK, "text/html; charset=utf-8", index)
	})
	e.GET("/ui/*file", func(c *gin.Context) {
		name := strings.TrimPrefix(c.Param("file"), "/")
		b, err := fs.ReadFile(web, name) // a directory, a missing or an invalid name: an error
		if name == "" || !fs.ValidPath(name) || err != nil {
			s.fail(c, errNotFound)
			return
		}
		c.Header("Cache-Control", "no-cache")
		pageHeaders(c, dashboardCSP) // its files, and the service worker, whose policy this is
		if name == "sw.js" {
			c.Header("Service-Worker-Allowed", "/ui/")
		}
		http.ServeContent(c.Writer, c.Request, name, time.Time{}, bytes.NewReader(b))
	})
}
