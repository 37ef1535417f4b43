package api

import (
	"embed"
	"io/fs"
	"net/http"

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
		c.Header("Content-Security-Policy", "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; frame-ancestors 'none'")
		c.Data(http.StatusOK, "text/html; charset=utf-8", index)
	})
	files := http.StripPrefix("/ui/", http.FileServer(http.FS(web)))
	e.GET("/ui/*file", func(c *gin.Context) {
		c.Header("Cache-Control", "no-cache")
		if c.Param("file") == "/sw.js" {
			c.Header("Service-Worker-Allowed", "/ui/")
		}
		files.ServeHTTP(c.Writer, c.Request)
	})
}
