package tusk.minidfs;

import java.io.File;
import java.nio.file.Files;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.hdfs.DFSConfigKeys;
import org.apache.hadoop.hdfs.MiniDFSCluster;

/**
 * Starts a MiniDFSCluster on free ports, prints one line
 * {@code Ready! hdfs=PORT http=PORT} on stdout, and shuts the cluster down when stdin closes or
 * receives a line. Arguments: [dataNodes] (default 1).
 */
public final class Main {
  private Main() {}

  public static void main(String[] args) throws Exception {
    int dataNodes = args.length > 0 && !args[0].isEmpty() ? Integer.parseInt(args[0]) : 1;
    File base = Files.createTempDirectory("tusk-minidfs").toFile();
    Configuration conf = new Configuration();
    conf.set(MiniDFSCluster.HDFS_MINIDFS_BASEDIR, base.getAbsolutePath());
    // Tests write as whatever user runs them; permissions would only get in the way.
    conf.setBoolean(DFSConfigKeys.DFS_PERMISSIONS_ENABLED_KEY, false);
    conf.setBoolean("dfs.webhdfs.enabled", true);
    conf.set(DFSConfigKeys.DFS_NAMENODE_HTTP_ADDRESS_KEY, "127.0.0.1:0");
    conf.set(DFSConfigKeys.DFS_DATANODE_HTTP_ADDRESS_KEY, "127.0.0.1:0");
    conf.setInt(DFSConfigKeys.DFS_REPLICATION_KEY, Math.min(dataNodes, 3));
    // 1 MB blocks by default so that tests exercise multi-block files; a second argument
    // sets another size (benchmarks use HDFS's own default, 128 MB).
    long blockSize = args.length > 1 ? Long.parseLong(args[1]) : 1024 * 1024;
    conf.setLong(DFSConfigKeys.DFS_BLOCK_SIZE_KEY, blockSize);
    conf.setLong(DFSConfigKeys.DFS_NAMENODE_MIN_BLOCK_SIZE_KEY, 1024);

    MiniDFSCluster cluster =
        new MiniDFSCluster.Builder(conf).numDataNodes(dataNodes).nameNodePort(0).build();
    cluster.waitActive();
    int rpc = cluster.getNameNodePort();
    int http = cluster.getNameNode().getHttpAddress().getPort();
    System.out.println("Ready! hdfs=" + rpc + " http=" + http);
    System.out.flush();

    Runtime.getRuntime().addShutdownHook(new Thread(() -> {
      try {
        cluster.shutdown(true);
      } catch (Throwable t) {
        // best effort on the way out
      }
    }));
    // Any input, or the parent going away (EOF), shuts the cluster down.
    System.in.read();
    cluster.shutdown(true);
    System.exit(0);
  }
}
