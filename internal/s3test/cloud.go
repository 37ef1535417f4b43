package s3test

import (
	"context"
	"io"
	"net"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/fsouza/fake-gcs-server/fakestorage"

	"storekeeper/internal/freeport"
)

// The other clouds' protocols, for the same tests: Google Cloud Storage
// through fake-gcs-server's library, in process, and Azure Blob Storage
// through Azurite, a separate process from npm. Both set process-wide
// environment (as the cloud SDKs read it), so tests using them do not run
// in parallel.

// StartGCS starts a fake GCS server with bucket "backups" on a loopback
// port for tb, points the GCS client at it (STORAGE_EMULATOR_HOST) and
// returns the bucket's gocloud URL.
func StartGCS(tb testing.TB) string {
	tb.Helper()
	port, err := freeport.Loopback()
	if err != nil {
		tb.Fatal(err)
	}
	host := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	srv, err := fakestorage.NewServerWithOptions(fakestorage.Options{Scheme: "http", Host: "127.0.0.1", Port: uint16(port),
		PublicHost: host, Writer: io.Discard})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(srv.Stop)
	srv.CreateBucketWithOpts(fakestorage.CreateBucketOpts{Name: "backups"})
	tb.Setenv("STORAGE_EMULATOR_HOST", host)
	return "gs://backups?anonymous=true"
}

// RequireAzuriteEnv, set to 1 (by .ci/run), makes StartAzurite fail rather
// than skip when Azurite is not installed.
const RequireAzuriteEnv = "STOREKEEPER_REQUIRE_AZURITE"

// Azurite's well-known development account.
const (
	azuriteAccount = "devstoreaccount1"
	azuriteKey     = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)

// StartAzurite starts Azurite's blob service (from $PATH or
// .ci/npm/node_modules/.bin, where .ci/run installs it) on a loopback port
// for tb, with container "backups", sets the account environment, and
// returns the container's gocloud URL. Without Azurite the test is
// skipped, saying so, unless STOREKEEPER_REQUIRE_AZURITE=1.
func StartAzurite(tb testing.TB) string {
	tb.Helper()
	bin, err := npmBin("azurite-blob")
	if err != nil {
		if os.Getenv(RequireAzuriteEnv) == "1" {
			tb.Fatalf("azurite is not installed and %s=1 (npm install --prefix .ci/npm azurite@3.35.0)", RequireAzuriteEnv)
		}
		tb.Skip("azurite is not installed (npm install --prefix .ci/npm azurite@3.35.0): the test against Azure Blob Storage did not run")
	}
	port, err := freeport.Loopback()
	if err != nil {
		tb.Fatal(err)
	}
	host := serve(tb, "azurite", port, bin, "--blobHost", "127.0.0.1", "--blobPort", strconv.Itoa(port), "--location", tb.TempDir(),
		"--skipApiVersionCheck", "--loose", "--silent")
	tb.Setenv("AZURE_STORAGE_ACCOUNT", azuriteAccount)
	tb.Setenv("AZURE_STORAGE_KEY", azuriteKey)
	cred, err := azblob.NewSharedKeyCredential(azuriteAccount, azuriteKey)
	if err != nil {
		tb.Fatal(err)
	}
	c, err := azblob.NewClientWithSharedKeyCredential("http://"+host+"/"+azuriteAccount, cred, nil)
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := c.CreateContainer(ctx, "backups", nil); err != nil {
		tb.Fatalf("azurite: create the container: %v", err)
	}
	return "azblob://backups?protocol=http&domain=" + host + "&localemu=true"
}
