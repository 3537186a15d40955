"""How good is a CLIP checkpoint's image tower, whatever the text side does? A nearest-centroid and
a logistic-regression probe on its embeddings (projected and pooled), fitted on 60% of the groups
of each diagnostic tile set and scored (balanced accuracy) on the other 40%. It bounds what
zero-shot classification with that tower can reach.

    pip install 'torch==2.13.0+cpu' transformers scikit-learn pillow
    python3 Scripts/experiments/encoder_probe.py out/eosin-small-v2-candidate/clip 160

Arguments: the HF CLIPModel folder and its input size. Reads ../shared/data/tiles.
"""
import torch, numpy as np, csv, sys, json, os
from PIL import Image
from transformers import CLIPModel
torch.set_num_threads(1)
W=sys.argv[1]; S=int(sys.argv[2])
m=CLIPModel.from_pretrained(W).eval()
mean=np.array([0.48145466,0.4578275,0.40821073]);std=np.array([0.26862954,0.26130258,0.27577711])
root=os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', '..', 'shared', 'data', 'tiles')
rng=np.random.default_rng(0)
for ds,cap in [('lc25000-lung',900),('ebhi-seg',1200),('prostate-panda',900),('endometrium',1000)]:
    r=list(csv.reader(open(f'{root}/{ds}/manifest.csv')))[1:]
    r=[(x[0],x[1],x[-1]) for x in r]; r=[r[i] for i in rng.permutation(len(r))[:cap]]
    X=[];L=[];G=[]
    for i in range(0,len(r),64):
        ims=[]
        for p,l,g in r[i:i+64]:
            im=Image.open(f'{root}/{ds}/{p}').convert('RGB'); w,h=im.size; s=min(w,h)
            im=im.crop(((w-s)//2,(h-s)//2,(w-s)//2+s,(h-s)//2+s)).resize((S,S),Image.BILINEAR)
            ims.append((np.asarray(im)/255.-mean)/std); L.append(l); G.append(g)
        x=torch.tensor(np.stack(ims).transpose(0,3,1,2),dtype=torch.float32)
        with torch.no_grad():
            vo=m.vision_model(pixel_values=x); X.append(torch.cat([m.visual_projection(vo.pooler_output), vo.pooler_output],1).numpy())
    X=np.concatenate(X); L=np.array(L); G=np.array(G)
    g=np.unique(G); tr=set(rng.choice(g,int(.6*len(g)),replace=False)); msk=np.array([x in tr for x in G])
    for name,Z in [('proj',X[:,:128]),('pool',X[:,128:])]:
        Z=Z/np.linalg.norm(Z,axis=1,keepdims=True)
        cl=np.unique(L); C=np.stack([Z[msk&(L==c)].mean(0) for c in cl]); pr=cl[(Z[~msk]@C.T).argmax(1)]
        ba=np.mean([(pr[L[~msk]==c]==c).mean() for c in cl if (L[~msk]==c).any()])
        # logistic probe
        from sklearn.linear_model import LogisticRegression
        lr=LogisticRegression(max_iter=2000,C=1.0).fit(Z[msk],L[msk]); p2=lr.predict(Z[~msk])
        ba2=np.mean([(p2[L[~msk]==c]==c).mean() for c in cl if (L[~msk]==c).any()])
        print(W.split('/')[-2],ds,name,'centroid bacc %.3f  logreg bacc %.3f'%(ba,ba2),flush=True)
